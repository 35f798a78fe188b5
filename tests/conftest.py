"""Shared fixtures: real server processes, boto3 clients, and the outside services tests may need."""

from __future__ import annotations

import compileall
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_here import create_account
from tests.support.console import ConsoleClient
from tests.support.identity import Caller
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer

REQUIRE_SERVICES = os.environ.get("KHOA_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get("KHOA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config: pytest.Config) -> None:
    """Compile Khoa's sources once, before any test starts a process: every server and CLI command a
    test runs is a new interpreter, and under PYTHONDONTWRITEBYTECODE (set on some machines) each one
    would otherwise compile every module from source again (about half a second a start)."""
    if not hasattr(config, "workerinput"):  # the controller only; xdist's workers start after it
        compileall.compile_dir(Path(__file__).resolve().parents[1] / "src", quiet=1)


def missing_service(reason: str) -> None:
    """Skip visibly, or fail when CI says the services must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """One shared server (SQLite, signatures checked, test clock on) for most integration tests."""
    instance = KhoaServer(tmp_path_factory.mktemp("khoa") / "data").start()
    yield instance
    instance.stop()


# Clients of the shared server signed as the account root, one per test (tests may add event hooks to
# them). A file that needs another scope, region or signer defines its own under the same name.


@pytest.fixture(scope="module")
def console(server: KhoaServer) -> ConsoleClient:
    """The web console of the shared server, signed in as the account root once per module (a module
    that needs another principal or region defines its own under the same name)."""
    client = ConsoleClient(server.endpoint)
    assert client.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY).status == 200
    return client


@pytest.fixture
def kms(server: KhoaServer) -> Any:
    return server.client("kms")


@pytest.fixture
def sm(server: KhoaServer) -> Any:
    return server.client("secretsmanager")


@pytest.fixture
def ssm(server: KhoaServer) -> Any:
    return server.client("ssm")


@pytest.fixture
def iam(server: KhoaServer) -> Any:
    return server.client("iam")


@pytest.fixture(scope="module")
def account_b(server: KhoaServer) -> Caller:
    """A second account on the shared server (made with ``khoa account create``, run in this process),
    one per test module."""
    return create_account(server)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[KhoaServer]:
    """A private server for tests that move the clock, restart or kill it."""
    instance = KhoaServer(tmp_path / "data")
    yield instance
    instance.stop()


@contextlib.contextmanager
def _new_postgres_database(admin: Any, prefix: str) -> Iterator[str]:
    """Create an empty database on the test PostgreSQL server; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    """An autocommit connection to the test PostgreSQL server (skips, or fails in CI, without one)."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        missing_service(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}")
        raise
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_admin: Any) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test session, dropped afterwards."""
    with _new_postgres_database(postgres_admin, "khoa_test") as url:
        yield url


@pytest.fixture
def private_postgres(postgres_admin: Any) -> Iterator[str]:
    """A PostgreSQL database of this test's own: the session's may hold installations sealed under
    other root keys."""
    with _new_postgres_database(postgres_admin, "khoa_private") as url:
        yield url


@pytest.fixture(scope="session")
def migrated_postgres(postgres_admin: Any) -> Iterator[str]:
    """A PostgreSQL database migrated to the newest schema, for this test session (each process)."""
    from khoa.storage.database import create_database_engine, migrate

    with _new_postgres_database(postgres_admin, "khoa_store") as url:
        made = create_database_engine(url)
        migrate(made)
        made.dispose()
        yield url


def _emptied(engine: Any) -> None:
    """Empty every table but Alembic's (migrations add no rows) and restart the sequences: a database as
    new as a just-migrated one, in a fraction of the time creating and migrating one takes (DELETE,
    not TRUNCATE: the tables hold a few rows, and TRUNCATE makes and syncs new files for each)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # no foreign-key order
        tables = conn.execute(
            text(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ).scalars()
        for table in list(tables):
            conn.execute(text(f'DELETE FROM "{table}"'))
        sequences = conn.execute(
            text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        ).scalars()
        for sequence in list(sequences):
            conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A migrated database of this test's own, once on SQLite and once on PostgreSQL (for tests of
    SQL that must behave alike on both; ``indirect`` parametrisation picks one)."""
    from khoa.storage.database import create_database_engine, migrate

    if request.param == "sqlite":
        made = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
        migrate(made)
    else:
        made = create_database_engine(request.getfixturevalue("migrated_postgres"))
        _emptied(made)
    yield made
    made.dispose()
