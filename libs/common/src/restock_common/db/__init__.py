"""PostgreSQL through Piccolo: the tables, the app config, the engine."""
