"""Zero downtime: an application of 8 threads querying PostgreSQL continuously (a new connection for
every query, the worst case) through ``khoa.client.connect_postgres`` and a ``SecretReader`` following
the change stream, while 10 rotations run (ROTATIONS), one after another.

- alternating users: not one failed query;
- single user (the password changes in place, so there is a window between setSecret and finishSecret
  where AWSCURRENT is already refused): the same rotations are watched at once by 8 threads using a
  plain cached password (aws-secretsmanager-caching's SecretCache, no refresh on failure) and by 8
  threads using the client; both failure counts are printed, and the client's must be 0. Whether a
  query lands inside a window depends on timing, so the window itself is also made by hand, and a
  connection inside it must succeed through AWSPENDING.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from psycopg import sql

from khoa.client import SecretReader, connect_postgres
from tests.support import pgcluster
from tests.support.pgcluster import PgDatabase
from tests.support.rotation import holder, register, rotate_now, stages_of, value_of
from tests.support.server import KhoaServer

# the database fixtures (pytest finds fixtures among a module's names)
pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database

THREADS = 8
ROTATIONS = 10
PAUSE = 0.2  # between one thread's queries (each a new connection): ~40 connections a second in all
pytestmark = pytest.mark.slow


@dataclass
class Application:
    """Threads each running ``query()`` in a loop until stopped, counting successes and failures."""

    name: str
    query: Callable[[], None]
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.query()
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self._lock:
                    self.failed += 1
                    self.errors[f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:90]}"] += 1
            else:
                with self._lock:
                    self.ok += 1
            self._stop.wait(PAUSE)

    def start(self) -> Application:
        for index in range(THREADS):
            thread = threading.Thread(target=self._loop, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def report(self) -> str:
        return f"{self.name}: {self.ok} queries ok, {self.failed} failed {dict(self.errors)}"


class CountingReader(SecretReader):
    """A SecretReader counting how often the client had to look beyond its cached AWSCURRENT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_reads = 0
        self.invalidations = 0

    def invalidate(self, secret_id: str) -> None:
        self.invalidations += 1
        super().invalidate(secret_id)

    def get_pending_json(self, secret_id: str) -> dict[str, Any] | None:
        self.pending_reads += 1
        return super().get_pending_json(secret_id)


def _client_query(reader: SecretReader, name: str) -> Callable[[], None]:
    def query() -> None:
        with connect_postgres(reader, name, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

    return query


def _plain_query(cache: SecretCache, name: str) -> Callable[[], None]:
    def query() -> None:
        secret = json.loads(cache.get_secret_string(name))
        with psycopg.connect(
            host=secret["host"],
            port=secret["port"],
            user=secret["username"],
            password=secret["password"],
            dbname=secret["dbname"],
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

    return query


def _retries(reader: CountingReader) -> str:
    return (
        f"cache invalidations (change stream + auth failures): {reader.invalidations}, "
        f"AWSPENDING reads: {reader.pending_reads}"
    )


def _rotate_many(server: KhoaServer, sm: Any, name: str, apps: list[Application]) -> list[str]:
    """ROTATIONS rotations, each completed before the next, with the applications querying throughout."""
    tokens = []
    time.sleep(0.5)  # every application is connected and has cached the secret
    for _ in range(ROTATIONS):
        tokens.append(rotate_now(server, sm, name))
        assert holder(stages_of(sm, name), "AWSCURRENT") == tokens[-1], "a rotation did not complete"
        time.sleep(0.15)
    time.sleep(0.5)
    assert all(app.ok > ROTATIONS for app in apps), [app.report() for app in apps]
    return tokens


def _setup(server: KhoaServer, sm: Any, database: PgDatabase, strategy: str, **extra: Any) -> str:
    arn = register(server, f"{strategy}-{uuid.uuid4().hex[:6]}", f"postgresql-{strategy}", "builtin")
    name = f"zero-downtime/{strategy}/{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString=json.dumps(database.secret(**extra)))
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=arn,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    return name


def test_alternating_users_no_failed_query(server: KhoaServer, pg_database: PgDatabase) -> None:
    sm = server.client("secretsmanager")
    master = sm.create_secret(
        Name=f"zero-downtime/master/{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps(pg_database.cluster.master_secret()),
    )["ARN"]
    name = _setup(server, sm, pg_database, "alternating-users", masterarn=master)
    reader = CountingReader(server.client("secretsmanager"), watch=True)
    app = Application("alternating users, khoa.client", _client_query(reader, name)).start()
    try:
        _rotate_many(server, sm, name, [app])
    finally:
        app.stop()
        reader.close()
    print(f"\n{ROTATIONS} rotations — {app.report()}; {_retries(reader)}")
    assert app.failed == 0, app.report()
    final = value_of(sm, name)
    assert pg_database.can_login(final["username"], final["password"])


def test_single_user_plain_cache_versus_client(server: KhoaServer, pg_database: PgDatabase) -> None:
    sm = server.client("secretsmanager")
    name = _setup(server, sm, pg_database, "single-user")
    plain_cache = SecretCache(config=SecretCacheConfig(), client=server.client("secretsmanager"))
    reader = CountingReader(server.client("secretsmanager"), watch=True)
    plain = Application("single user, plain cached password", _plain_query(plain_cache, name)).start()
    client = Application("single user, khoa.client", _client_query(reader, name)).start()
    try:
        _rotate_many(server, sm, name, [plain, client])
    finally:
        plain.stop()
        client.stop()
        reader.close()
    print(f"\n{ROTATIONS} rotations — {plain.report()}")
    print(f"{ROTATIONS} rotations — {client.report()}; {_retries(reader)}")
    assert client.failed == 0, client.report()
    assert plain.failed > 0, "the plain cache should have been caught out by the first rotation"


def test_client_connects_inside_the_single_user_window(server: KhoaServer, pg_database: PgDatabase) -> None:
    """The window the soak above may or may not hit, made by hand so it is always tested: setSecret
    has changed the password in the database, and AWSCURRENT still holds the old one."""
    sm = server.client("secretsmanager")
    name = f"zero-downtime/window/{uuid.uuid4().hex[:8]}"
    created = sm.create_secret(Name=name, SecretString=json.dumps(pg_database.secret()))
    reader = CountingReader(server.client("secretsmanager"))
    query = _client_query(reader, name)
    try:
        query()  # AWSCURRENT is cached now
        token = str(uuid.uuid4())
        new_password = secrets.token_urlsafe(16)
        sm.put_secret_value(  # createSecret
            SecretId=name,
            ClientRequestToken=token,
            SecretString=json.dumps(pg_database.secret(password=new_password)),
            VersionStages=["AWSPENDING"],
        )
        with pg_database.cluster.connect() as conn:  # setSecret
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                    sql.Identifier(pg_database.username), sql.Literal(new_password)
                )
            )
        query()  # the cached password is refused; the client tries AWSPENDING
        assert reader.pending_reads == 1
        sm.update_secret_version_stage(  # finishSecret
            SecretId=name,
            VersionStage="AWSCURRENT",
            MoveToVersionId=token,
            RemoveFromVersionId=created["VersionId"],
        )
        query()
        assert value_of(sm, name)["password"] == new_password
    finally:
        reader.close()
