"""Adapters behind the sender's ports that are not providers (PostgreSQL)."""
