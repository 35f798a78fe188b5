"""The JobRunner lease: several runners on one database, only one of them runs the jobs."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from khoa.clock import Clock
from khoa.jobs import JobRunner
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


def lease_row(engine: Engine) -> tuple[str, float] | None:
    with engine.connect() as conn:
        row = conn.execute(select(schema.leases.c.holder, schema.leases.c.expires_at)).first()
    return None if row is None else (row[0], row[1])


def expire_lease(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(update(schema.leases).values(expires_at=0.0))


def runner_with_log(engine: Engine, name: str, log: list[str]) -> JobRunner:
    runner = JobRunner(engine, Clock(), 3600)
    runner.register("record", lambda now: log.append(name))
    return runner


def test_only_one_runner_holds_the_lease(engine: Engine) -> None:
    first, second = JobRunner(engine, Clock(), 3600), JobRunner(engine, Clock(), 3600)
    assert first.acquire_lease() is True
    assert second.acquire_lease() is False
    # The holder renews its own lease; the other keeps being refused.
    assert first.acquire_lease() is True
    assert second.acquire_lease() is False
    row = lease_row(engine)
    assert row is not None and row[0] == first.lease.holder


def test_only_the_leader_runs_jobs(engine: Engine) -> None:
    log: list[str] = []
    first, second = runner_with_log(engine, "first", log), runner_with_log(engine, "second", log)
    assert first.run_due() == 1
    assert second.run_due() == 0
    assert first.run_due() == 1
    assert log == ["first", "first"]


def test_an_expired_lease_passes_to_another_runner(engine: Engine) -> None:
    log: list[str] = []
    first, second = runner_with_log(engine, "first", log), runner_with_log(engine, "second", log)
    assert first.run_due() == 1
    expire_lease(engine)  # the leader died and its lease ran out
    assert second.run_due() == 1
    assert first.run_due() == 0
    assert log == ["first", "second"]


def test_released_lease_is_taken_at_once(engine: Engine) -> None:
    first, second = JobRunner(engine, Clock(), 3600), JobRunner(engine, Clock(), 3600)
    assert first.acquire_lease()
    first.release_lease()
    assert second.acquire_lease() is True
    # Releasing a lease one does not hold changes nothing.
    first.release_lease()
    assert first.acquire_lease() is False


def test_stop_releases_the_lease(engine: Engine) -> None:
    first, second = JobRunner(engine, Clock(), 3600), JobRunner(engine, Clock(), 3600)

    async def run_and_stop() -> None:
        first.start()
        assert first.acquire_lease()
        await first.stop()

    asyncio.run(run_and_stop())
    assert second.acquire_lease() is True


def test_concurrent_first_acquire_has_one_winner(engine: Engine) -> None:
    runners = [JobRunner(engine, Clock(), 3600) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(runners))

    def contend(runner: JobRunner) -> None:
        barrier.wait()
        results.append(runner.acquire_lease())

    threads = [threading.Thread(target=contend, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_failing_job_does_not_stop_the_others(engine: Engine) -> None:
    seen: list[datetime] = []
    runner = JobRunner(engine, Clock(), 3600)

    def broken(now: datetime) -> None:
        raise RuntimeError("boom")

    runner.register("broken", broken)
    runner.register("works", seen.append)
    assert runner.run_due() == 1
    assert len(seen) == 1


def test_jobs_see_the_domain_clock(engine: Engine) -> None:
    from datetime import timedelta

    clock = Clock()
    clock.advance(timedelta(days=400))
    seen: list[datetime] = []
    runner = JobRunner(engine, clock, 3600)
    runner.register("clock", seen.append)
    runner.run_due()
    assert seen[0] - clock.now() < timedelta(seconds=5)
    assert seen[0] > datetime.now(seen[0].tzinfo) + timedelta(days=399)
