"""The Alembic migrations build exactly the tables schema.py declares, on SQLite and PostgreSQL.

The code reads and writes through schema.py; a database only ever gets what the migrations create.
A column or index added to one and not the other would first show on an upgraded installation."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate


def _differences(engine: Engine) -> list[object]:
    migrate(engine)
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), schema.metadata))


def test_sqlite_migrations_match_the_schema(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_postgresql_migrations_match_the_schema(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()
