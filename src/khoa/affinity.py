"""Keeping each server process on a CPU of its own (``KHOA_CPU_AFFINITY``, default ``auto``).

A worker's threads - the event loop, the audit writer, the leader's job runner - hand each other the
GIL and wake each other thousands of times a second. Spread over CPUs by the scheduler, every hand-off
is a wake-up on another CPU (an inter-processor interrupt; under a hypervisor, an exit to it) and moves
the interpreter's hot data between caches. Measured with ``make bench`` on a 2-vCPU virtual machine,
GetSecretValue with the audit trail on went from 1,907 to 2,602 req/s with one worker, and the
trail's cost (best runs) from 26.7% to 3.0% with one worker and from 17.9% to 9.3% with two.

Workers of one installation share its data directory and take CPUs through lock files there
(``<data-dir>/cpu-<n>.lock``, held while the process lives), so two workers never share a CPU while
another is free; a worker finding every CPU taken, or a machine with one CPU, stays unpinned. Separate
installations on one machine do not see each other's locks: each starts its search at a CPU picked
from its process ID, so they spread out rather than all starting on the first CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("khoa.affinity")

MODES = ("auto", "off")


@dataclass
class Pinned:
    """A CPU this process keeps to, and the open lock file that claims it (closed at shutdown)."""

    cpu: int
    lock_fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def pin_process(lock_dir: Path) -> Pinned | None:
    """Claim a free CPU among those this process may use and move every thread onto it."""
    if not hasattr(os, "sched_setaffinity"):
        return None  # not Linux
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    first = os.getpid() % len(allowed)
    for offset in range(len(allowed)):
        cpu = allowed[(first + offset) % len(allowed)]
        try:
            fd = os.open(lock_dir / f"cpu-{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.info("not pinning to a CPU: cannot create lock files in %s (%s)", lock_dir, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # another worker of this installation has it
        try:
            os.sched_setaffinity(0, {cpu})  # this thread first: if it may not move, none may
        except OSError as exc:
            os.close(fd)
            log.info("not pinning to a CPU: %s", exc)
            return None
        _move_threads({cpu})
        log.info("worker %d keeps to CPU %d", os.getpid(), cpu)
        return Pinned(cpu, fd)
    log.info("not pinning to a CPU: all %d are taken by other workers", len(allowed))
    return None


def _move_threads(cpus: set[int]) -> None:
    """Threads started later inherit the mask of the thread that starts them; these already exist."""
    for thread in threading.enumerate():
        if thread.native_id is not None:
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread.native_id, cpus)
