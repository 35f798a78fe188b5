"""Whether the audit trail's log files can be delivered: the directory's write probe and delivery's
own successes and failures.

Events are committed to the database first and delivered to files later, so a full or unwritable
audit directory refuses no call: without this it showed only as ERROR lines. :class:`TrailHealth`
is what readiness (503 with the reason), the metrics and the ``audit-delivery-failing`` alert read.
It is per process: every process probes the directory itself (so a node restarted on a full disk is
unready before its first delivery), and the process that leads adds what its delivery passes saw.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from khoa.audit.files import STAGING_DIR, probe_directory

# A probe's answer is reused this long: readiness may be asked several times a second.
PROBE_SECONDS = 5.0
# Space is low (the storage-low alert) below the smaller of these: a tenth of a small disk, or
# 2 GiB of a large one (a tenth of 10 TB is more than a node writes in months).
LOW_SPACE_FRACTION = 0.10
LOW_SPACE_BYTES = 2 * 1024**3
# Below this much room a file system counts as full: the probe's byte may still fit, in a block the
# file system had left, where SQLite's next commit (a few pages of WAL) no longer does.
FULL_BYTES = 1024 * 1024


def _size(count: float) -> str:
    """``count`` bytes for a person: 3.1 MiB, 12.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class TrailHealth:
    """Thread-safe: the job thread writes it, readiness (off the loop) and scrapes read it."""

    def __init__(
        self,
        directory: Path,
        database_directory: Path | None = None,
        probe_seconds: float = PROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``database_directory``: where a SQLite database lives, probed as well (on a full disk
        the audit writer's next commit fails; readiness should say so before a request finds out)."""
        self.directory = directory
        self.database_directory = database_directory
        self.probe_seconds = probe_seconds
        self.clock = clock
        self.failures = 0  # delivery passes (and probes) that failed, since the process started
        self._probed_at = -float("inf")
        self._probe_problem: str | None = None
        self._delivery_problem: str | None = None
        # what the latest probe read of each directory's file system: name -> (free, size) in bytes
        self._space: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one probe at a time; the others use its answer
        self._probe_name = f".khoa-probe-{os.getpid()}"

    # -- the write probe -------------------------------------------------------------------------
    def probe(self, force: bool = False) -> str | None:
        """Why the audit directory (or the database's) cannot take a file now (None when it can):
        writes, syncs and removes a small file, and counts a file system with less than
        :data:`FULL_BYTES` of room as full; at most once per ``probe_seconds`` unless ``force``."""
        with self._probe_lock:
            if not force and self.clock() - self._probed_at < self.probe_seconds:
                return self._probe_problem
            problem = probe_directory(self.directory, f"{STAGING_DIR}/{self._probe_name}")
            if problem is not None:
                problem = f"the audit directory {problem}"
            elif self.database_directory is not None:
                problem = probe_directory(self.database_directory, self._probe_name)
                if problem is not None:
                    problem = f"the database directory {problem}"
            space = self._measure()
            if problem is None:
                # (a file system that reports no size - some network and FUSE ones - tells nothing)
                full = [
                    (name, free) for name, (free, size) in sorted(space.items()) if size and free < FULL_BYTES
                ]
                if full:
                    name, free = full[0]
                    problem = f"the {name} directory's file system is full ({_size(free)} free)"
            with self._lock:
                if problem is not None and self._probe_problem is None:
                    self.failures += 1
                self._probe_problem = problem
                self._probed_at = self.clock()
                self._space = space
            return problem

    def _measure(self) -> dict[str, tuple[int, int]]:
        """Free and total bytes of the file systems holding the audit and database directories.
        Free is what an unprivileged writer may use (what ``df`` calls available), whoever runs the
        server: root may still write the blocks kept for it, but ext4 also keeps blocks from root,
        so at the margin a free count that includes them promised room SQLite no longer found."""
        space: dict[str, tuple[int, int]] = {}
        directories = {"audit": self.directory, "database": self.database_directory}
        for name, directory in directories.items():
            if directory is None:
                continue
            try:
                found = os.statvfs(directory)
            except OSError:
                continue  # missing or unreadable: the write probe says so
            space[name] = (found.f_bavail * found.f_frsize, found.f_blocks * found.f_frsize)
        return space

    # -- what delivery saw -----------------------------------------------------------------------
    def delivery_failed(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self._delivery_problem = reason

    def delivery_succeeded(self) -> None:
        with self._lock:
            self._delivery_problem = None

    # -- readers ---------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """The latest probe's answer (probing first when it is stale)."""
        return self.probe() is None

    def space(self) -> dict[str, tuple[int, int]]:
        """(free, size) in bytes by directory (``audit``, ``database``), as the latest probe read
        them (no probe: for scrapes, which run on the event loop)."""
        with self._lock:
            return dict(self._space)

    def low_space(self) -> str | None:
        """Why space is running out (probing first when the latest probe is stale), or None: a
        directory's file system has less free than the smaller of :data:`LOW_SPACE_FRACTION` of its
        size and :data:`LOW_SPACE_BYTES`. Calls still succeed; once it is full, writes and every
        call whose record cannot commit are refused."""
        self.probe()
        low = []
        for name, (free, size) in sorted(self.space().items()):
            if size and free < min(size * LOW_SPACE_FRACTION, LOW_SPACE_BYTES):
                low.append(f"the {name} directory's file system has {_size(free)} free of {_size(size)}")
        return "; ".join(low) or None

    def known_problem(self) -> str | None:
        """Like :meth:`problem` from what was last seen, without probing (for metrics scrapes, which
        run on the event loop)."""
        with self._lock:
            return self._probe_problem or self._delivery_problem

    def problem(self, fresh: bool = False) -> str | None:
        """Why log files cannot be delivered now, or None: the probe's finding, else the latest
        delivery pass's failure (delivery may fail where a small probe succeeds: a nearly full disk).
        ``fresh``: probe now, whenever the latest probe was (readiness: a probe from before the disk
        froze or filled must not answer for it)."""
        probed = self.probe(force=fresh)
        if probed is not None:
            return probed
        with self._lock:
            return self._delivery_problem
