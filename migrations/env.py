"""Alembic environment: online migrations only, one PostgreSQL advisory lock so replicas can race."""

from __future__ import annotations

from alembic import context
from colecache.db.engine import make_engine
from colecache.db.schema import metadata
from colecache.settings import Settings
from sqlalchemy import text

_LOCK_ID = 0x0C01E_CAC4E  # arbitrary, constant: serialises concurrent `upgrade` runs on PostgreSQL


def _url() -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    return configured or Settings().resolved_database_url


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata, render_as_batch=not postgres)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("colecache migrations run online only: `colecache migrate` or `alembic upgrade head`")
run_migrations_online()
