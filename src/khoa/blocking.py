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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

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


@contextmanager
def on_the_loop() -> Iterator[None]:
    """Run the block as a call tried on the event loop (see the module docstring)."""
    token = _ON_THE_LOOP.set(True)
    try:
        yield
    finally:
        _ON_THE_LOOP.reset(token)


def refuse_on_the_loop(what: str) -> None:
    """Raise :class:`WouldBlock` if the caller is a call tried on the event loop; ``what`` names the
    wait (for logs and tests)."""
    if _ON_THE_LOOP.get():
        raise WouldBlock(what)


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
