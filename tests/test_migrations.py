"""The alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from colecache.db.engine import make_engine, migrate
from colecache.db.schema import metadata
from sqlalchemy import inspect


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def migrated_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def test_migrations_match_declared_tables(migrated_url):
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_works(migrated_url):
    from alembic import command
    from colecache.db.engine import alembic_config

    migrate(migrated_url)  # second run: nothing to do, no error
    command.downgrade(alembic_config(migrated_url), "base")
    engine = make_engine(migrated_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    migrate(migrated_url)
    engine = make_engine(migrated_url)
    assert {"embeddings", "fingerprints", "studies", "observations"} <= set(inspect(engine).get_table_names())
    engine.dispose()
