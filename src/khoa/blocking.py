"""Keeping waits on other machines off the event loop.

A call that may wait on a peer — the network database, an external key store's proxy, any outbound
HTTP — must never run on a worker's event loop: a silent peer would hold every other request and
the probes with it. Most calls never wait on one (their credentials, policies, keys and metadata are
cached), and handing each to a thread and back costs more than the work itself. So the pipeline runs
a read on the loop inside :func:`on_the_loop`, and the first thing that would wait on a peer raises
:class:`WouldBlock` before it starts waiting (``refuse_on_the_loop``, called by the database engine
of a network database and by ``khoa.outbound``); the pipeline then runs the call again, from the
start, on a request thread. Only reads are tried this way: until they wait on something they have
done nothing but compute and read caches, so running them again changes nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# True while the running code is a call tried on the event loop (a context variable: threads the
# loop hands work to start without it, so code on a request thread is never refused).
_ON_THE_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("khoa_on_the_loop", default=False)


class WouldBlock(BaseException):
    """A call tried on the event loop reached a wait on a peer: run it again on a thread.

    A BaseException, so that no ``except Exception`` on the way (a fallback, a 503 for a database
    error) can mistake it for the peer's failure."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class on_the_loop:  # (lower case: used as a function, ``with on_the_loop():``)
    """Run the block as a call tried on the event loop (see the module docstring). A class, not a
    generator-based context manager: every read enters one, and this costs a third as much."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _ON_THE_LOOP.set(True)

    def __exit__(self, *exc_info: object) -> None:
        _ON_THE_LOOP.reset(self._token)


def is_on_the_loop() -> bool:
    """Whether the caller is a call tried on the event loop (:class:`on_the_loop`)."""
    return _ON_THE_LOOP.get()


def refuse_on_the_loop(what: str) -> None:
    """Raise :class:`WouldBlock` if the caller is a call tried on the event loop; ``what`` names the
    wait (for logs and tests)."""
    if _ON_THE_LOOP.get():
        raise WouldBlock(what)


class DatabaseStuck(Exception):
    """A thread has been inside one database statement longer than any bound allows: the file system
    under an SQLite database stopped answering (frozen, a hung network mount), where the kernel holds
    the thread and no timeout of SQLite's reaches it. The call is answered 503 and its thread is left
    to finish when the storage comes back (khoa.storage.database.is_unavailable)."""


class StatementClock:
    """When the database statement each thread is running began (SQLite's, khoa.storage.turn).

    A waiter on a thread's work asks it whether that thread is stuck, so that it can stop waiting on
    storage that no longer answers while a merely long call (many statements, each within its bound)
    is waited for. Only threads doing waited-on work (:func:`run_unless_stuck`) count, each for the
    executor it serves: a background job's long statement holds no caller, and one stuck request
    thread does not turn away work its sibling threads are free to do. Each thread writes only its
    own entries, so no lock."""

    def __init__(self) -> None:
        self._began: dict[int, float] = {}
        self._serving: dict[int, int] = {}  # thread -> id() of the executor it serves

    def begin(self) -> None:
        self._began[threading.get_ident()] = time.monotonic()

    def end(self) -> None:
        self._began.pop(threading.get_ident(), None)

    @contextmanager
    def serving(self, executor: object) -> Iterator[int]:
        """Mark the calling thread as doing ``executor``'s work somebody waits on; yields its
        identity."""
        thread = threading.get_ident()
        self._serving[thread] = id(executor)
        try:
            yield thread
        finally:
            self._serving.pop(thread, None)

    def stuck(self, thread: int, bound: float) -> bool:
        """Whether ``thread`` has been in one statement for more than ``bound`` seconds."""
        began = self._began.get(thread)
        return began is not None and time.monotonic() - began > bound

    def stuck_serving(self, executor: object, bound: float) -> bool:
        """Whether a thread doing ``executor``'s waited-on work has been in one statement for more
        than ``bound`` seconds (its queue then waits on storage that stopped answering)."""
        key = id(executor)
        return any(
            self.stuck(thread, bound) for thread, serves in list(self._serving.items()) if serves == key
        )


async def run_unless_stuck(
    executor: concurrent.futures.Executor | None,
    clock: StatementClock,
    bound: float,
    work: Callable[..., T],
    *args: object,
) -> T:
    """``work(*args)`` on ``executor`` (None: the loop's default), given up with
    :class:`DatabaseStuck` once the thread running it has spent more than ``bound`` in one statement,
    or, before it starts, once a thread doing the executor's work has.

    Refused at once while one of the executor's threads is stuck: work queued behind stuck threads
    would only wait for them. Work given up before it starts never runs; work given up while running
    finishes (or fails) when the storage answers again, and nobody waits for it."""
    if clock.stuck_serving(executor, bound):
        raise DatabaseStuck(f"a database statement has not returned in {bound:.1f} s")
    runner: list[int] = []
    abandoned = threading.Event()

    def tracked() -> T:
        if abandoned.is_set():
            raise DatabaseStuck("given up before it started")
        with clock.serving(executor) as thread:
            runner.append(thread)
            return work(*args)

    future = asyncio.get_running_loop().run_in_executor(executor, tracked)
    poll = min(0.25, bound / 4)
    while True:
        done, _ = await asyncio.wait((future,), timeout=poll)
        if done:
            return future.result()
        if clock.stuck(runner[0], bound) if runner else clock.stuck_serving(executor, bound):
            abandoned.set()
            future.add_done_callback(_consume)
            raise DatabaseStuck(f"a database statement has not returned in {bound:.1f} s")


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned run's outcome (so that asyncio does not log it as never retrieved)."""
    if not future.cancelled():
        future.exception()


class SingleFlight(Generic[T]):
    """A blocking function run on a thread of its own, one run at a time, for callers that must not
    wait on it for long: the probes and the scrape, whose database queries a silent database holds
    until its bounds end them.

    A caller that comes while a run is in flight waits on that same run instead of starting another,
    so a silent peer ties up one thread however often the caller asks; a caller that stops waiting
    leaves the run to finish (within its own bounds) for the next caller to share.
    """

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._running: concurrent.futures.Future[T] | None = None

    def run(self) -> concurrent.futures.Future[T]:
        """The run in flight, or a new one."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._executor.submit(self._work)
            return self._running

    def result_within(self, seconds: float) -> T:
        """The run's result (from a thread that may block); TimeoutError after ``seconds``."""
        return self.run().result(timeout=seconds)

    async def answer_within(self, seconds: float) -> T:
        """The run's result (on the event loop, which never blocks on it); TimeoutError after
        ``seconds``, leaving the run to finish."""
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.run())), seconds)

    def close(self) -> None:
        """Stop the thread (a run still going ends within its own bounds)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
