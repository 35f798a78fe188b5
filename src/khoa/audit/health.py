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
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one probe at a time; the others use its answer
        self._probe_name = f".khoa-probe-{os.getpid()}"

    # -- the write probe -------------------------------------------------------------------------
    def probe(self, force: bool = False) -> str | None:
        """Why the audit directory cannot take a file now (None when it can): writes, syncs and
        removes a small file, at most once per ``probe_seconds`` unless ``force``."""
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
            with self._lock:
                if problem is not None and self._probe_problem is None:
                    self.failures += 1
                self._probe_problem = problem
                self._probed_at = self.clock()
            return problem

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

    def known_problem(self) -> str | None:
        """Like :meth:`problem` from what was last seen, without probing (for metrics scrapes, which
        run on the event loop)."""
        with self._lock:
            return self._probe_problem or self._delivery_problem

    def problem(self) -> str | None:
        """Why log files cannot be delivered now, or None: the probe's finding, else the latest
        delivery pass's failure (delivery may fail where a small probe succeeds: a nearly full disk)."""
        probed = self.probe()
        if probed is not None:
            return probed
        with self._lock:
            return self._delivery_problem
