"""Background work (scheduled deletions, automatic rotation, audit delivery, alerts) run by one leader.

Every worker process runs a :class:`JobRunner`, but a job pass only happens while the process holds
the ``jobs`` lease row in the database, so several processes or machines on one database never run
the same due work twice.

Leadership. A heartbeat thread (off the event loop: a slow database must not stall requests) takes or
renews the lease every third of its time to live (``KHOA_JOB_LEASE_SECONDS``, 6 s by default), so the
leader keeps it while it lives. When the leader dies (kill -9) its lease runs out within that time and
another process's heartbeat takes it within a third of it more, then runs a pass at once: background
work resumes within 4/3 of the lease time (8 s by default). Gaining and losing the lease is logged;
:attr:`JobRunner.is_leader` feeds the ``khoa_leader`` metric and ``/_khoa/ready``.

Lanes. Jobs are grouped in lanes, each with its own thread and its own passes. Secret rotation runs
user functions (each step for up to ``KHOA_ROTATION_STEP_TIMEOUT_SECONDS``), so it has a lane of its
own: a slow rotation does not hold key deletion, alerts or audit delivery. A lane whose pass is still
running when the next one is due is not queued twice.

Fencing. Passes run under a :class:`khoa.lease.WriteFence`: every write a job makes first checks, in
its own transaction, that this process still holds the lease, so a pass that outlives the lease (a
paused process, a partitioned node) can no longer write; the job stops with
:class:`khoa.lease.LeaseLost`. Between jobs the pass also renews the lease and stops when it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from khoa.affinity import run_thread_on
from khoa.clock import Clock
from khoa.lease import Lease, LeaseLost, WriteFence
from khoa.logs import LogLimiter
from khoa.storage.database import is_unavailable

log = logging.getLogger("khoa.jobs")

Job = Callable[[datetime], object]
LEASE_NAME = "jobs"
MAIN_LANE = "main"
DEFAULT_LEASE_SECONDS = 6.0


@dataclass
class _Lane:
    """Jobs that run one after another on one thread; lanes run side by side."""

    name: str
    executor: ThreadPoolExecutor
    jobs: list[tuple[str, Job]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class JobRunner:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        interval_seconds: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        thread_cpus: frozenset[int] = frozenset(),
    ) -> None:
        """``thread_cpus``: the CPUs the jobs' threads run on (empty: wherever the thread that
        starts them may). A worker pinned to one CPU (khoa.affinity) gives its jobs every CPU it
        could use: on the worker's own, the trail's followers took turns with its event loop, and a
        one-worker node's p99 rose by a third whenever a pass ran (measured: 18 ms unpinned, 24 ms
        pinned)."""
        self._clock = clock
        self._thread_cpus = thread_cpus
        self._interval = interval_seconds
        self._logs = LogLimiter(log)  # a failing job fails every pass: one traceback per minute
        self.lease = Lease(engine, LEASE_NAME, lease_seconds)
        self.fence = WriteFence(self.lease)
        self._lease_seconds = lease_seconds
        self._lanes: dict[str, _Lane] = {}
        self._task: asyncio.Task[None] | None = None
        self._passes: set[asyncio.Task[int]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: threading.Thread | None = None
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()
        self._leader = False
        self._last_renewed = -float("inf")
        self._renew_failing = False

    def register(self, name: str, job: Job, lane: str = MAIN_LANE) -> None:
        """Add a job to ``lane`` (jobs of a lane run in registration order; lanes run side by side)."""
        if lane not in self._lanes:
            executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"khoa-jobs-{lane}",
                initializer=run_thread_on,
                initargs=(self._thread_cpus,),
            )
            self._lanes[lane] = _Lane(lane, executor)
        self._lanes[lane].jobs.append((name, job))

    # -- leadership -----------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """Whether this process held the ``jobs`` lease when it last took or renewed it."""
        return self._leader

    def acquire_lease(self) -> bool:
        """Take or renew the ``jobs`` lease (the heartbeat renews it, so the leader keeps it)."""
        held = self.lease.acquire()
        self._note(held)
        return held

    def release_lease(self) -> None:
        """Give up the lease (at shutdown) so a restarted or other process need not wait for it to expire."""
        was_leader = self._leader
        self.lease.release()
        with self._state_lock:
            self._leader = False
        if was_leader:
            log.info("jobs leadership released (lease %s)", self.lease.holder[:8])

    def _note(self, held: bool) -> bool:
        """Record the outcome of taking the lease, log a change; True when leadership was just gained."""
        with self._state_lock:
            if held:
                self._last_renewed = time.monotonic()
            changed, self._leader = held != self._leader, held
        if changed and held:
            log.info(
                "jobs leadership gained: this process runs background work (lease %s)", self.lease.holder[:8]
            )
        elif changed:
            log.warning("jobs leadership lost (lease %s): background work stops here", self.lease.holder[:8])
        return changed and held

    def _beat_once(self) -> bool:
        """One heartbeat: take or renew the lease; True when leadership was just gained. While the
        database cannot be reached the state is kept until the lease would have run out."""
        try:
            held = self.lease.acquire()
        except Exception as exc:  # noqa: BLE001 - any database failure: retry at the next beat
            if not self._renew_failing:
                log.warning("could not renew the jobs lease: %s", type(exc).__name__)
            self._renew_failing = True
            if time.monotonic() - self._last_renewed < self._lease_seconds:
                return False
            held = False
        else:
            if self._renew_failing:
                log.info("the jobs lease can be renewed again")
            self._renew_failing = False
        return self._note(held)

    def _beat(self) -> None:
        """The heartbeat thread: every third of the lease time; starts passes when it gains the lease."""
        while not self._stopping.is_set():
            gained = self._beat_once()
            loop = self._loop
            if gained and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._start_passes, False)
            self._stopping.wait(self._lease_seconds / 3)

    # -- passes ---------------------------------------------------------------------------------------
    def _pass(self, lane: _Lane) -> int:
        """Run ``lane``'s jobs once if this process is the leader (renewing the lease before each job,
        stopping when it is lost); returns how many jobs ran. Runs on the lane's thread, fenced."""
        now = self._clock.now()
        ran = 0
        for name, job in lane.jobs:
            try:
                if not self.acquire_lease():  # outside the fence: taking the lease is not job work
                    break
            except Exception as exc:  # noqa: BLE001 - logged (rate-limited)
                if is_unavailable(exc):  # an outage: its name is enough, not a traceback
                    self._logs.warning("lease", "could not renew the jobs lease (%s)", type(exc).__name__)
                else:
                    self._logs.exception("lease", "could not renew the jobs lease")
                break
            try:
                with self.fence.active():
                    job(now)
                ran += 1
                self._logs.recovered(f"job {name}", "background job %s works again", name)
            except LeaseLost:
                log.warning("background job %s stopped: this process lost the jobs lease", name)
                self._note(False)
                break
            except Exception:  # noqa: BLE001 - logged (rate-limited); the next pass tries again
                self._logs.exception(f"job {name}", "background job %s failed", name)
        return ran

    def _ordered_lanes(self) -> list[_Lane]:
        """The lanes for a pass run on request: the side lanes first, then the main one, whose last
        jobs (audit delivery, alerts) then see what the others did (periodic passes of the lanes run
        independently, so there that shows one pass later)."""
        lanes = list(self._lanes.values())
        return [lane for lane in lanes if lane.name != MAIN_LANE] + [
            lane for lane in lanes if lane.name == MAIN_LANE
        ]

    def run_due(self) -> int:
        """Run every lane's jobs once, here and now, if this process is the leader; how many jobs ran."""
        return sum(self._pass(lane) for lane in self._ordered_lanes())

    async def _pass_async(self, lane: _Lane) -> int:
        lane.waiting += 1
        try:
            await lane.lock.acquire()
        finally:
            lane.waiting -= 1
        try:
            return await asyncio.get_running_loop().run_in_executor(lane.executor, self._pass, lane)
        finally:
            lane.lock.release()

    async def run_due_async(self) -> int:
        """Run a pass of every lane now (``--dev`` and the test harness ask for it), on the lanes'
        threads: jobs (rotation functions above all) may call this very server back through its API,
        which needs the event loop free. Lanes run one after another, in :meth:`_ordered_lanes`."""
        ran = 0
        for lane in self._ordered_lanes():
            ran += await self._pass_async(lane)
        return ran

    def _start_passes(self, queue: bool) -> None:
        """Start a pass of every lane that is idle (``queue``: or queue one behind a running pass, if
        none is queued yet)."""
        loop = asyncio.get_running_loop()
        for lane in self._lanes.values():
            busy = lane.lock.locked()
            if lane.waiting or (busy and not queue):
                continue
            task = loop.create_task(self._pass_async(lane))
            self._passes.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[int]) -> None:
        self._passes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("job pass failed", exc_info=task.exception())

    def poke(self) -> None:
        """Run a pass soon (e.g. right after RotateSecret queued a rotation). Safe from any thread:
        calls may run on request threads (khoa.server.pipeline)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if running is not None and loop in (None, running):
            self._start_passes(True)
        elif loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._start_passes, True)
        # else not started: its first pass finds the work

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._start_passes(False)

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._periodic())
            self._stopping.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="khoa-jobs-lease", daemon=True)
            self._heartbeat.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._passes):
            task.cancel()
        if self._heartbeat is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._heartbeat.join, 5.0)
            self._heartbeat = None
        self._loop = None
        try:
            self.release_lease()
        except Exception:
            log.exception("could not release the jobs lease")
