"""Engines and migrations for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

WRITE_INTENT = "colecache_write_intent"
"""Execution option: this transaction will write after reading (BEGIN IMMEDIATE on SQLite)."""
PG_CONNECT_TIMEOUT_S = 3


def make_engine(url: str) -> Engine:
    """An engine tuned for the dialect: SQLite in WAL mode with a busy timeout, pooled PostgreSQL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # SQLAlchemy emits BEGIN itself (below), so the driver must not open transactions.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # A transaction that reads and then writes must take the write lock up front, or a
            # concurrent writer makes it fail with "database is locked" instead of waiting.
            immediate = conn.get_execution_options().get(WRITE_INTENT, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Pre-ping replaces connections a restarted server left dead; the connect timeout bounds how long
    # a request (or a readiness ping's thread) waits on an unreachable server (the URL may set its own).
    connect_args = {} if "connect_timeout=" in url else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    return create_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_timeout=10, connect_args=connect_args
    )


def dialect_insert(dialect: str, table: Table):
    """An INSERT with the dialect's `on_conflict_do_nothing` / `on_conflict_do_update` (upserts)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"colecache stores in SQLite and PostgreSQL, not {dialect}")


def head_revision() -> str:
    """The newest migration this code ships (what `colecache migrate` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def alembic_config(url: str):
    """An alembic Config pointing at the migrations shipped inside the package."""
    from alembic.config import Config

    from .. import migrations  # the top-level migrations/ folder, installed as colecache.migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` on `url` (safe to run from several processes at once on PostgreSQL)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
