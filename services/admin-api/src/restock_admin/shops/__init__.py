"""Shops (tenants): registration, the stand-in for the OAuth install until it exists."""
