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

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

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
