"""Restock's shared contracts: settings, messages, tables, topology, broker helpers, telemetry."""
