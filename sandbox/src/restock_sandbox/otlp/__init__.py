"""An OTLP/HTTP trace receiver: the services export their spans here in development and in tests, so a
whole trace (webhook to provider call) can be read back by its id. Not a collector: spans live in memory,
bounded, until cleared."""
