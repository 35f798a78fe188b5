"""The lease row (khoa.lease) on every database Khoa's leader election may sit on.

Each test runs on SQLite, on PostgreSQL (127.0.0.1:5432) and on MariaDB (127.0.0.1:3306); a server
that is not there skips its runs visibly (a failure under KHOA_REQUIRE_SERVICES=1). Contenders get
engines of their own, so they meet only in the database, as separate processes do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from khoa.lease import Lease
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support import mariadb

maria_database = mariadb.maria_database

TTL = 30.0


class FakeClock:
    """Wall-clock seconds that move only when a test says so. They start small: ``leases.expires_at``
    is a ``Float``, which MariaDB stores as a 4-byte FLOAT and returns to six significant digits, so
    the expiries the tests read back stay exact there too."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One empty database with the ``leases`` table; ``engine()`` opens another pool on it."""

    url: str
    engines: list[Engine] = field(default_factory=list)

    def engine(self) -> Engine:
        engine = create_database_engine(self.url)
        self.engines.append(engine)
        return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'khoa.db'}"
    elif request.param == "postgresql":
        url = str(request.getfixturevalue("private_postgres"))
    else:
        db: mariadb.MariaDatabase = request.getfixturevalue("maria_database")
        url = f"mysql+pymysql://{db.username}:{db.password}@{mariadb.HOST}:{mariadb.PORT}/{db.name}"
    found = Backend(url)
    schema.leases.create(found.engine())
    yield found
    for engine in found.engines:
        engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lease_for(backend: Backend, clock: FakeClock) -> Callable[..., Lease]:
    """A new holder of a lease (``jobs`` unless named), on an engine of its own."""

    def make(name: str = "jobs", ttl: float = TTL) -> Lease:
        return Lease(backend.engine(), name, ttl, clock=clock)

    return make


def row(backend: Backend, name: str = "jobs") -> tuple[str, float] | None:
    with backend.engines[0].connect() as conn:
        found = conn.execute(
            select(schema.leases.c.holder, schema.leases.c.expires_at).where(schema.leases.c.name == name)
        ).first()
    return None if found is None else (found[0], found[1])


def test_two_holders_contend_and_one_wins(backend: Backend, lease_for: Callable[..., Lease]) -> None:
    first, second = lease_for(), lease_for()
    assert first.holder != second.holder
    assert first.acquire() is True
    assert second.acquire() is False
    assert first.acquire() is True  # the holder renews its own lease
    assert second.acquire() is False
    found = row(backend)
    assert found is not None and found[0] == first.holder


def test_expiry_lets_the_other_take_it(
    backend: Backend, lease_for: Callable[..., Lease], clock: FakeClock
) -> None:
    first, second = lease_for(), lease_for()
    assert first.acquire()
    clock.now += TTL - 1
    assert second.acquire() is False  # not expired yet
    clock.now += 2
    assert second.acquire() is True
    assert first.acquire() is False  # the old holder does not get it back
    found = row(backend)
    assert found is not None and found == (second.holder, clock.now + TTL)


def test_release_hands_over_at_once(backend: Backend, lease_for: Callable[..., Lease]) -> None:
    first, second = lease_for(), lease_for()
    assert first.acquire()
    first.release()
    assert second.acquire() is True
    first.release()  # releasing a lease one does not hold changes nothing
    assert first.acquire() is False
    found = row(backend)
    assert found is not None and found[0] == second.holder


def test_renew_keeps_it_past_the_first_expiry(
    backend: Backend, lease_for: Callable[..., Lease], clock: FakeClock
) -> None:
    first, second = lease_for(), lease_for()
    assert first.acquire()
    clock.now += TTL - 5
    assert first.renew() is True
    clock.now += 10  # past the expiry of the first take, within the renewed one
    assert second.acquire() is False
    found = row(backend)
    assert found is not None and found == (first.holder, clock.now - 10 + TTL)


def test_renew_after_another_took_it_fails(lease_for: Callable[..., Lease], clock: FakeClock) -> None:
    first, second = lease_for(), lease_for()
    assert first.acquire()
    clock.now += TTL + 1
    assert second.acquire()
    assert first.renew() is False
    assert second.renew() is True


def test_leases_of_other_names_are_independent(backend: Backend, lease_for: Callable[..., Lease]) -> None:
    jobs, trail = lease_for("jobs"), lease_for("audit-trail")
    assert jobs.acquire() and trail.acquire()
    assert lease_for("jobs").acquire() is False
    assert lease_for("audit-trail").acquire() is False
    jobs_row, trail_row = row(backend, "jobs"), row(backend, "audit-trail")
    assert jobs_row is not None and jobs_row[0] == jobs.holder
    assert trail_row is not None and trail_row[0] == trail.holder


def _race(contenders: list[Lease]) -> list[bool]:
    results: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(contenders))

    def contend(lease: Lease) -> None:
        start.wait()
        try:
            results.append(lease.acquire())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_concurrent_first_acquire_has_one_winner(backend: Backend, lease_for: Callable[..., Lease]) -> None:
    contenders = [lease_for() for _ in range(6)]
    assert sorted(_race(contenders)) == [False] * 5 + [True]
    found = row(backend)
    assert found is not None and found[0] in {lease.holder for lease in contenders}


def test_concurrent_takeover_of_an_expired_lease_has_one_winner(
    backend: Backend, lease_for: Callable[..., Lease], clock: FakeClock
) -> None:
    dead = lease_for()
    assert dead.acquire()
    clock.now += TTL + 1  # the holder died and its lease ran out
    contenders = [lease_for() for _ in range(6)]
    assert sorted(_race(contenders)) == [False] * 5 + [True]
    found = row(backend)
    assert found is not None and found[0] in {lease.holder for lease in contenders}


def test_held_releases_on_the_way_out(backend: Backend, lease_for: Callable[..., Lease]) -> None:
    first, second = lease_for(), lease_for()
    with first.held() as held:
        assert held is True
        with second.held() as other:
            assert other is False  # wait=0: one try
        found = row(backend)
        assert found is not None and found[0] == first.holder
    assert second.acquire() is True


def test_held_waits_for_a_release(lease_for: Callable[..., Lease]) -> None:
    first, second = lease_for(), lease_for()
    assert first.acquire()
    releaser = threading.Timer(0.3, first.release)
    releaser.start()
    started = time.monotonic()
    with second.held(wait=10) as held:
        assert held is True
    releaser.join()
    assert time.monotonic() - started < 10


def test_held_logs_a_failed_release_instead_of_raising(
    backend: Backend, lease_for: Callable[..., Lease], caplog: pytest.LogCaptureFixture
) -> None:
    lease = lease_for()
    with caplog.at_level(logging.ERROR, logger="khoa.lease"), lease.held() as held:
        assert held
        lease.engine.dispose()
        lease.engine = create_database_engine("sqlite:////nonexistent/dir/khoa.db")
    assert "could not release the jobs lease" in caplog.text
    with backend.engines[0].begin() as conn:  # it runs out by itself; here, expire it at once
        conn.execute(update(schema.leases).values(expires_at=0.0))
    assert lease_for().acquire() is True
