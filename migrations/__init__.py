"""Alembic migrations for colecache's SQL schema (installed as `colecache.migrations`)."""
