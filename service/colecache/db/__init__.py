"""The SQL layer: table definitions, engine set-up and alembic migrations."""
