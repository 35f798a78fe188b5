"""LastAccessedDate: written off the read's path, and only for reads the audit trail recorded.

AWS keeps the day a secret, and each of its versions, was last read. Writing it inside GetSecretValue
put a write on a read's path: on SQLite it waited, on the event loop, for the writers' turn and then the
busy timeout, so a database held by another process (a backup, an operator's ``sqlite3``) held the
whole worker, probes included, for many times the database bound, and every queued read tried the
write again. And a read is recorded in the trail only after its handler has returned: a read the trail
then failed to record was refused (503), yet had moved the date, which then contradicted the trail.

So a read only notes its access (:meth:`AccessLog.note`: a dict update, no I/O, never an error) and a
thread of the store's own writes the notes: coalesced (one write per secret, version and day however
many reads noted it), and each only once the trail holds a successful record of one of the reads that
noted it. The record is found by the request's ID among its account's records of the read's Region
and time (the trail's lookup index serves the account and time). A note none of whose reads the trail
has recorded within ``GIVE_UP_SECONDS`` is dropped: those reads were refused. A write that fails (the
database locked or unavailable) is tried again, with backoff, and never reaches a request. The date is
a day, so the moments to the record and the write do not show; a process that stops loses the notes
it has not written (the next read of the day notes again). With the trail off (KHOA_AUDIT=off,
benchmarks only) no read is recorded, so none counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Engine, or_, select, update

from khoa.logs import LogLimiter
from khoa.storage import schema

log = logging.getLogger("khoa.secretsmanager")

# A note none of whose reads the trail recorded within this long is dropped (a read's record is
# committed within the database bounds, or the read refused).
GIVE_UP_SECONDS: Final = 60.0
# A pass waits this long first, for the reads' records to commit and other notes to join it; passes
# with notes left come back after twice the previous wait, up to MAX_WAIT_SECONDS.
GATHER_SECONDS: Final = 0.05
MAX_WAIT_SECONDS: Final = 2.0
# The thread ends after this long with nothing to do (a note starts it again).
IDLE_SECONDS: Final = 30.0
# Bounds on what waits in memory: notes (secret, version and day), and the reads kept per note.
MAX_NOTES: Final = 10_000
READS_PER_NOTE: Final = 8
# A read's record has the time the trail took it, at most this long before the read's own (the same
# clock, read later) and within GIVE_UP_SECONDS after.
EARLIER_SECONDS: Final = 1.0
# Request IDs looked for in one statement.
IDS_PER_QUERY: Final = 50

_EVENTS = schema.audit_events
_SECRETS = schema.sm_secrets
_VERSIONS = schema.sm_versions

# (secret id, version id, day): what one write records.
Access = tuple[str, str, float]


@dataclass
class _Note:
    region: str
    # request ID → (the account whose trail records the read, the read's time in epoch seconds)
    reads: dict[str, tuple[str, float]] = field(default_factory=dict)
    last_noted: float = 0.0  # time.monotonic()


class AccessLog:
    """The secret store's notes of reads, and the thread that writes them (see the module docstring).

    ``written`` is called with what a pass wrote (the store forgets its cached records of them).
    ``background=False``: no thread; whoever keeps the log calls :meth:`flush` (tests)."""

    def __init__(
        self, engine: Engine, written: Callable[[list[Access]], None], *, background: bool = True
    ) -> None:
        self._engine = engine
        self._written = written
        self._background = background
        self._lock = threading.Lock()  # the notes, and the thread's coming and going
        self._notes: dict[Access, _Note] = {}
        self._confirmed: set[Access] = set()  # recorded reads whose write has not succeeded yet
        self._passing = threading.Lock()  # one pass at a time (the thread's, or a test's)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._logs = LogLimiter(log)

    def note(self, access: Access, *, region: str, account_id: str, request_id: str, at: float) -> None:
        """Note that request ``request_id`` (of ``account_id``, at ``at``) read the secret's version on
        the day: written once the trail has recorded it. Never waits on anything but a lock held for
        dict updates, and never fails the read (a full log leaves the note out)."""
        start = False
        with self._lock:
            note = self._notes.get(access)
            if note is None:
                if len(self._notes) >= MAX_NOTES:
                    return
                note = self._notes[access] = _Note(region)
            note.reads[request_id] = (account_id, at)
            if len(note.reads) > READS_PER_NOTE:
                del note.reads[next(iter(note.reads))]
            note.last_noted = time.monotonic()
            if self._background and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="khoa-sm-access", daemon=True)
                start = True
        if start:
            assert self._thread is not None
            self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        """Notes not written yet (recorded or not)."""
        with self._lock:
            return len(self._notes) + len(self._confirmed)

    def flush(self) -> bool:
        """One pass: look for the noted reads' records, write the accesses recorded, drop notes given
        up; True while notes remain. Raises what the database raises (the notes stay)."""
        with self._passing:
            with self._lock:
                notes = {access: _Note(n.region, dict(n.reads)) for access, n in self._notes.items()}
            recorded = self._recorded(notes.values()) if notes else set()
            now = time.monotonic()
            with self._lock:
                for access, note in list(self._notes.items()):
                    # Judged by the reads looked for: under steady reads a note's newest reads (all
                    # it keeps) are newer than the query by the time it answers, so judged by those
                    # it was never confirmed, and the day never written, however long the reads went on.
                    looked_for = notes.get(access)
                    if looked_for is not None and recorded.intersection(looked_for.reads):
                        del self._notes[access]
                        self._confirmed.add(access)
                    elif now - note.last_noted > GIVE_UP_SECONDS:
                        del self._notes[access]  # its reads were refused: they count for nothing
                writes = sorted(self._confirmed)
            if writes:
                self._write(writes)
                with self._lock:
                    self._confirmed.difference_update(writes)
                self._written(writes)
            with self._lock:
                return bool(self._notes or self._confirmed)

    def _recorded(self, notes: Iterable[_Note]) -> set[str]:
        """The request IDs among ``notes``' reads that the trail holds a successful record of."""
        by_region: dict[str, dict[str, tuple[str, float]]] = {}
        for note in notes:
            by_region.setdefault(note.region, {}).update(note.reads)
        found: set[str] = set()
        with self._engine.connect() as conn:
            for region, reads in by_region.items():
                ids = list(reads)
                for start in range(0, len(ids), IDS_PER_QUERY):
                    chunk = {
                        request_id: reads[request_id] for request_id in ids[start : start + IDS_PER_QUERY]
                    }
                    times = [at for _, at in chunk.values()]
                    records = conn.execute(
                        select(_EVENTS.c.record)
                        .where(_EVENTS.c.account_id.in_(sorted({account for account, _ in chunk.values()})))
                        .where(_EVENTS.c.event_time >= min(times) - EARLIER_SECONDS)
                        .where(_EVENTS.c.event_time <= max(times) + GIVE_UP_SECONDS)
                        .where(_EVENTS.c.region == region)
                        .where(_EVENTS.c.error_code.is_(None))
                        .where(or_(*(_EVENTS.c.record.contains(r, autoescape=True) for r in chunk)))
                    ).scalars()
                    for record in records:
                        request_id = json.loads(record).get("requestID")
                        if request_id in chunk:
                            found.add(request_id)
        return found

    def _write(self, accesses: list[Access]) -> None:
        """Record the days, in one transaction; a day never moves back (a late write of an earlier
        day, after midnight, leaves the later one)."""
        with self._engine.begin() as conn:
            for secret_id, version_id, day in accesses:
                conn.execute(
                    update(_SECRETS)
                    .where(_SECRETS.c.secret_id == secret_id)
                    .where(or_(_SECRETS.c.last_accessed_at.is_(None), _SECRETS.c.last_accessed_at < day))
                    .values(last_accessed_at=day)
                )
                conn.execute(
                    update(_VERSIONS)
                    .where(_VERSIONS.c.secret_id == secret_id)
                    .where(_VERSIONS.c.version_id == version_id)
                    .where(or_(_VERSIONS.c.last_accessed_at.is_(None), _VERSIONS.c.last_accessed_at < day))
                    .values(last_accessed_at=day)
                )

    def _run(self) -> None:
        wait = GATHER_SECONDS
        while True:
            self._wake.wait(wait)  # a new note, or time to look again
            self._wake.clear()
            time.sleep(GATHER_SECONDS)
            try:
                remaining = self.flush()
            except Exception as exc:  # noqa: BLE001 - the database is locked or down: try again later
                self._logs.warning(
                    "access",
                    "cannot record secrets' LastAccessedDate yet (%s): will retry",
                    type(exc).__name__,
                )
                remaining = True
            if remaining:
                wait = min(wait * 2, MAX_WAIT_SECONDS)
                continue
            wait = GATHER_SECONDS
            if self._wake.wait(IDLE_SECONDS):
                continue
            with self._lock:
                if not self._notes and not self._confirmed:
                    self._thread = None
                    return
