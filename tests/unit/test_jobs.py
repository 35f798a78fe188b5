"""The JobRunner lease: several runners on one database, only one of them runs the jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update

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


# -- fencing, lanes, the heartbeat ---------------------------------------------------------------------------
def test_a_pass_that_lost_the_lease_can_no_longer_write(engine: Engine) -> None:
    """Job work is fenced: once another runner took the lease, the old leader's writes are refused
    (and the job stops), while writes made outside a pass (requests) go on."""
    first, second = JobRunner(engine, Clock(), 3600), JobRunner(engine, Clock(), 3600)
    written: list[str] = []

    def job(now: datetime) -> None:
        with engine.begin() as conn:  # while leader: allowed
            conn.execute(insert(schema.leases).values(name="before", holder="x", expires_at=0.0))
        written.append("before")

        # the pass outlived the lease, and another runner (another process: another thread here) took it
        def take_over() -> None:
            expire_lease(engine)
            second.acquire_lease()

        takeover = threading.Thread(target=take_over)
        takeover.start()
        takeover.join()
        with engine.begin() as conn:
            conn.execute(insert(schema.leases).values(name="after", holder="x", expires_at=0.0))
        written.append("after")

    first.register("job", job)
    try:
        assert first.run_due() == 0, "the job was stopped, not counted as run"
        assert written == ["before"]
        assert not first.is_leader and second.is_leader
        with engine.connect() as conn:
            names = set(conn.execute(select(schema.leases.c.name)).scalars())
        assert names == {"jobs", "before"}, "the write after the lease was lost committed"
        with engine.begin() as conn:  # not in a pass: not fenced
            conn.execute(insert(schema.leases).values(name="request", holder="x", expires_at=0.0))
    finally:
        first.fence.close()
        second.fence.close()


def test_a_slow_lane_does_not_hold_the_others(engine: Engine) -> None:
    release = threading.Event()
    seen: list[str] = []
    runner = JobRunner(engine, Clock(), 3600)
    runner.register("slow", lambda now: release.wait(10), lane="rotation")
    runner.register("fast", lambda now: seen.append("fast"))

    async def scenario() -> None:
        runner.poke()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == ["fast"], "the main lane waited for the rotation lane"
        runner.poke()  # a pass is queued behind the slow one, not run twice at once
        release.set()
        await runner.run_due_async()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        runner.fence.close()


def test_the_heartbeat_takes_over_from_a_dead_leader(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The leader stops renewing (it died): within the lease time and a third, the other runner's
    heartbeat holds the lease, says so, and runs a pass at once."""
    caplog.set_level(logging.INFO, logger="khoa.jobs")
    dead = JobRunner(engine, Clock(), 3600, lease_seconds=0.6)
    assert dead.acquire_lease()  # and then nothing renews it
    ran: list[float] = []
    survivor = JobRunner(engine, Clock(), 3600, lease_seconds=0.6)
    survivor.register("record", lambda now: ran.append(time.monotonic()))

    async def scenario() -> float:
        started = time.monotonic()
        survivor.start()
        try:
            for _ in range(60):
                if ran:
                    break
                await asyncio.sleep(0.05)
        finally:
            await survivor.stop()
        return started

    try:
        started = asyncio.run(scenario())
        assert ran and ran[0] - started < 2.0
        messages = [r.getMessage() for r in caplog.records]
        assert any("leadership gained" in m for m in messages)
        assert any("leadership released" in m for m in messages)
        assert not survivor.is_leader
    finally:
        dead.fence.close()
        survivor.fence.close()


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs"
)
def test_the_jobs_threads_use_every_cpu_the_worker_could(engine: Engine) -> None:
    """A worker pinned to one CPU (khoa.affinity) starts its jobs' threads with that one CPU; they
    are given back every CPU the worker could use, so the trail's followers do not take turns with
    its event loop."""
    everything = frozenset(os.sched_getaffinity(0))
    seen: list[frozenset[int]] = []
    runner = JobRunner(engine, Clock(), 3600, thread_cpus=everything)
    runner.register("where", lambda now: seen.append(frozenset(os.sched_getaffinity(0))))
    os.sched_setaffinity(0, {min(everything)})  # this thread is the pinned worker
    try:
        assert runner.acquire_lease()
        asyncio.run(runner.run_due_async())  # on the lane's thread
    finally:
        os.sched_setaffinity(0, everything)
        runner.release_lease()
    assert seen == [everything]
