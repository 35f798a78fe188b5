"""Background work (scheduled deletions, automatic rotation) run by one leader at a time.

Every worker process runs a :class:`JobRunner`, but a job pass only happens while the process holds
the ``jobs`` lease row in the database, so several processes or machines on one database never run
the same due work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import Engine

from khoa.clock import Clock
from khoa.lease import Lease

log = logging.getLogger("khoa.jobs")

Job = Callable[[datetime], object]
LEASE_NAME = "jobs"
_LEASE_SECONDS = 30.0


class JobRunner:
    def __init__(self, engine: Engine, clock: Clock, interval_seconds: float) -> None:
        self._clock = clock
        self._interval = interval_seconds
        self._jobs: list[tuple[str, Job]] = []
        self.lease = Lease(engine, LEASE_NAME, _LEASE_SECONDS)
        self._task: asyncio.Task[None] | None = None
        self._poked: asyncio.Task[int] | None = None
        self._pass_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khoa-jobs")

    def register(self, name: str, job: Job) -> None:
        self._jobs.append((name, job))

    def acquire_lease(self) -> bool:
        """Take or renew the ``jobs`` lease; a pass renews it, so the leader keeps it while it lives."""
        return self.lease.acquire()

    def release_lease(self) -> None:
        """Give up the lease (at shutdown) so a restarted or other process need not wait for it to expire."""
        self.lease.release()

    def run_due(self) -> int:
        """Run every job once if this process is the leader; returns how many jobs ran."""
        if not self.acquire_lease():
            return 0
        now = self._clock.now()
        ran = 0
        for name, job in self._jobs:
            try:
                job(now)
                ran += 1
            except Exception:
                log.exception("background job %s failed", name)
        return ran

    async def run_due_async(self) -> int:
        """Run a pass on a worker thread: jobs (rotation functions above all) may call this very server
        back through its API, which needs the event loop free."""
        async with self._pass_lock:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.run_due)

    def poke(self) -> None:
        """Run a pass soon (e.g. right after RotateSecret queued a rotation)."""
        loop = asyncio.get_running_loop()
        self._poked = loop.create_task(self.run_due_async())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_due_async()
            except Exception:
                log.exception("job pass failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            self.release_lease()
        except Exception:
            log.exception("could not release the jobs lease")
