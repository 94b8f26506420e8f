"""Persistence: SQLModel tables and small functions that take a `Session`."""
