"""Write calls whose outcome was lost to a crash: never delivered as successes, marked as unknown.

A write is recorded before it runs and completed with its outcome afterwards. A process killed in
between (kill -9, power loss, a node lost for good) leaves the first record alone: no outcome, no
error - which reads like a success. So the first record carries a marker naming the process that
wrote it (``additionalEventData.khoaPending``); completing the call replaces the whole record
(without it). A record that still carries the marker is *waiting for its outcome*. Its outcome is
*lost* when its writer is known to be gone (a process of this host that is no longer running: only
this host's processes can be checked) or when it has waited :data:`OUTCOME_WAIT_SECONDS` (or longer
when rotation steps may run longer: :func:`outcome_wait_seconds`), longer than any write runs. A lost
outcome is recorded as unknown: ``errorCode`` ``Khoa.OutcomeUnknown`` (what ``khoa audit tail`` and
LookupEvents show) and ``additionalEventData.outcome`` ``unknown``, the marker removed.

What holds:

- Delivery (:mod:`khoa.audit.delivery`) never puts a record waiting for its outcome into a log file.
  When it reaches one whose outcome is lost, it delivers the unknown outcome and changes the event's
  row to the same record in the transaction that records the delivery (only if the row still holds
  the record read: an outcome that arrived meanwhile wins, and delivery reads it again). When it
  reaches one whose outcome may still come, it delivers the events before it and stops there; the
  events after it wait (an event it had passed, committed late, is held and offered again) until the
  outcome arrives or is lost. So a writer on another node that died for good holds the trail's
  delivery back for at most the wait, and every delivered record is what its row then holds.
- When a process starts it marks the undelivered events of this host's processes that are gone
  (:func:`mark_lost_outcomes`); the leader does the same every job pass (:class:`LostOutcomeSweep`),
  and marks too those that waited past the bound, so LookupEvents and ``khoa audit tail`` show the
  unknown outcome before delivery comes to them. Only undelivered events are changed: a delivered
  record is hashed into its file and digest.
- A writer still alive past the wait whose outcome then arrives replaces the unknown outcome in the
  row (the recorder's completion is not guarded); if that event was delivered meanwhile, the row no
  longer matches its log file, which says "unknown" (what was known when it was signed). The wait is
  chosen so that no real call gets there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, func, select, update

from khoa.audit.events import AuditEvent
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

PENDING_KEY = "khoaPending"
# What a stored record waiting for its outcome contains (records are stored as compact JSON): tested
# on the text before any record is parsed, so the delivery of a record that is not waiting (nearly
# all) costs one substring search.
PENDING_TEXT = f'"{PENDING_KEY}":'
UNKNOWN_CODE = "Khoa.OutcomeUnknown"
UNKNOWN_MESSAGE = (
    "The server stopped before this call's outcome was recorded: the call may or may not have taken effect."
)
# A write that ran but whose database stopped answering before it could say whether it committed (a
# COMMIT whose reply was lost): the caller is told 503, the trail that the outcome is unknown.
UNCONFIRMED_MESSAGE = (
    "The database stopped answering before this call's outcome was confirmed: the call may or may not "
    "have taken effect (the caller was answered ServiceUnavailableException)."
)
# How long a write's first record may wait for its outcome before the outcome counts as lost,
# whoever wrote it (a writer on another host cannot be checked). It must exceed the longest a write
# legitimately runs. The longest is an emergency rotation (EmergencyRotateSecret, or
# ReportLeakedValues responding to a leak): it runs the four steps of a rotation function inside the
# call, each for up to KHOA_ROTATION_STEP_TIMEOUT_SECONDS (60 s by default), four minutes in all,
# then checks the old values against the database. Every other write is bounded by a few statements
# of at most KHOA_DATABASE_TIMEOUT_SECONDS (5 s by default), the writers' turn (5 s) and XKS proxy
# calls (2 s each). Ten minutes is over twice the longest; a longer step timeout lengthens it
# (:func:`outcome_wait_seconds`). It is also how long a node lost for good can hold the trail's
# delivery back.
OUTCOME_WAIT_SECONDS = 600.0
_ROTATION_STEPS = 4  # createSecret, setSecret, testSecret, finishSecret
_EVENTS = schema.audit_events
_DELIVERY = schema.audit_delivery
_BATCH = 500


def outcome_wait_seconds(step_timeout_seconds: float) -> float:
    """The wait for an outcome when rotation steps may each run ``step_timeout_seconds``: at least
    :data:`OUTCOME_WAIT_SECONDS`, and an emergency rotation's four steps with two minutes to spare."""
    return max(OUTCOME_WAIT_SECONDS, _ROTATION_STEPS * step_timeout_seconds + 120.0)


def _host() -> str:
    """This host, as a short hash (the marker may reach a log file: it need not name the machine)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


_this: Writer | None = None


@dataclass(frozen=True)
class Writer:
    """The process that records events: host hash, process id and a token unique to this process
    (a later process may get the same id)."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Writer:
        """This process's writer: one per process (the recorder marks with it and delivery judges
        with it; a second one would take the first one's records for an earlier process's)."""
        global _this  # one per process (made again in a forked child)
        if _this is None or _this.pid != os.getpid():
            _this = cls(_host(), os.getpid(), secrets.token_hex(4))
        return _this

    @property
    def marker(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    def mark_pending(self, event: AuditEvent) -> None:
        """Mark a write's first record (made before the call runs) as waiting for its outcome."""
        data = event.record.get("additionalEventData")
        event.record["additionalEventData"] = {
            **(data if isinstance(data, dict) else {}),
            PENDING_KEY: self.marker,
        }

    def is_gone(self, marker: str) -> bool:
        """Whether the process that wrote ``marker`` is known to be gone (only this host's can be)."""
        host, _, rest = marker.partition(":")
        pid_text, _, token = rest.partition(":")
        if host != self.host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == self.pid:
            return token != self.token  # an earlier process that had this process's id
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, someone else's
        return False

    def lost(self, marker: str, recorded_at: float, now: float, wait_seconds: float) -> bool:
        """Whether the outcome of a record ``marker`` wrote at ``recorded_at`` is lost at ``now``:
        its writer is gone, or it has waited ``wait_seconds``."""
        return now - recorded_at >= wait_seconds or self.is_gone(marker)


def pending_marker(text: str) -> tuple[dict[str, Any], str] | None:
    """The record and its writer's marker when ``text`` (a stored record) is a first record still
    waiting for its outcome; None for any other (a substring test before the JSON is parsed)."""
    if PENDING_TEXT not in text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    data = record.get("additionalEventData") if isinstance(record, dict) else None
    marker = data.get(PENDING_KEY) if isinstance(data, dict) else None
    return (record, marker) if isinstance(marker, str) else None


def unknown_outcome(record: dict[str, object]) -> dict[str, object]:
    """``record`` (a write's first record) with its outcome stated as unknown."""
    data = record.get("additionalEventData")
    details = {k: v for k, v in (data.items() if isinstance(data, dict) else ()) if k != PENDING_KEY}
    details["outcome"] = "unknown"
    marked = {k: v for k, v in record.items() if k != "additionalEventData"}
    marked["additionalEventData"] = details
    marked["errorCode"] = UNKNOWN_CODE
    marked["errorMessage"] = UNKNOWN_MESSAGE
    return marked


def unknown_outcome_text(record: dict[str, object]) -> str:
    """:func:`unknown_outcome` as stored (compact JSON)."""
    return json.dumps(unknown_outcome(record), separators=(",", ":"), default=str)


def mark_lost_outcomes(
    engine: Engine, writer: Writer, now: float | None = None, wait_seconds: float = OUTCOME_WAIT_SECONDS
) -> int:
    """Record "outcome unknown" on every undelivered first record whose writer is gone (with
    ``now``: or that has waited ``wait_seconds`` by then); returns how many. Each row is changed
    only if it still holds the record read (a late completion wins)."""
    after = _delivered(engine)
    marked = 0
    while True:
        rows = _pending_rows(engine, after)
        if not rows:
            return marked
        after = rows[-1].seq
        marked += _mark(engine, writer, rows, now, wait_seconds)[0]


@dataclass
class LostOutcomeSweep:
    """The leader's periodic :func:`mark_lost_outcomes` (a job), reading only what is new: each pass
    looks at the events after the newest there was when the pass before last began (so one that
    committed a little out of order, after a lower number was read, is still seen) and again at
    those it found still waiting. A new leader starts with every undelivered event. What it misses
    (an event committed more than a pass late) is still judged by delivery."""

    engine: Engine
    writer: Writer
    wait_seconds: float = OUTCOME_WAIT_SECONDS
    # The newest event when the pass before last and the last pass began.
    _seen: tuple[int, int] = field(default=(0, 0), init=False)
    _waiting: set[int] = field(default_factory=set, init=False)

    def run(self, now: datetime) -> int:
        at = now.timestamp()
        delivered = _delivered(self.engine)
        with self.engine.connect() as conn:
            newest = int(conn.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0)
        if newest < self._seen[1]:  # the trail was emptied and numbering started again
            self._seen, self._waiting = (0, 0), set()
        start = max(delivered, self._seen[0])
        again = sorted(seq for seq in self._waiting if delivered < seq <= start)
        waiting: list[int] = []
        marked = 0
        for chunk in range(0, len(again), _BATCH):
            rows = _pending_rows(self.engine, delivered, again[chunk : chunk + _BATCH])
            done, still = _mark(self.engine, self.writer, rows, at, self.wait_seconds)
            marked, waiting = marked + done, [*waiting, *still]
        after = start
        while True:
            rows = _pending_rows(self.engine, after)
            if not rows:
                break
            after = rows[-1].seq
            done, still = _mark(self.engine, self.writer, rows, at, self.wait_seconds)
            marked, waiting = marked + done, [*waiting, *still]
        self._seen, self._waiting = (self._seen[1], newest), set(waiting)
        return marked


def _delivered(engine: Engine) -> int:
    """The delivery cursor's position: every event up to it is in a log file (or held as not yet
    committed: those are left to delivery)."""
    with engine.connect() as conn:
        delivered = conn.execute(
            select(_DELIVERY.c.delivered_seq).where(_DELIVERY.c.name == "trail")
        ).scalar()
    return int(delivered or 0)


def _pending_rows(engine: Engine, after: int, seqs: Sequence[int] | None = None) -> Sequence[Row[Any]]:
    """Undelivered write records after ``after`` that may still wait for their outcome (the first
    :data:`_BATCH`, in order), or those of them among ``seqs``."""
    c = _EVENTS.c
    query = (
        select(c.seq, c.event_id, c.event_time, c.record)
        .where(c.seq > after, c.read_only.is_(False), c.error_code.is_(None))
        .where(c.record.contains(PENDING_TEXT))
        .order_by(c.seq)
    )
    query = query.limit(_BATCH) if seqs is None else query.where(c.seq.in_(seqs))
    with engine.connect() as conn:
        return conn.execute(query).all()


def _mark(
    engine: Engine, writer: Writer, rows: Iterable[Row[Any]], now: float | None, wait_seconds: float
) -> tuple[int, list[int]]:
    """Mark the rows whose outcome is lost; returns how many were marked and the sequence numbers of
    those still waiting."""
    marked = 0
    waiting: list[int] = []
    c = _EVENTS.c
    for row in rows:
        found = pending_marker(row.record)
        if found is None:
            continue
        record, marker = found
        lost = (
            writer.is_gone(marker)
            if now is None
            else writer.lost(marker, float(row.event_time), now, wait_seconds)
        )
        if not lost:
            waiting.append(int(row.seq))
            continue
        with engine.begin() as conn:
            changed = conn.execute(
                update(_EVENTS)
                .where(c.seq == row.seq, c.record == row.record)
                .values(record=unknown_outcome_text(record), error_code=UNKNOWN_CODE)
            ).rowcount
        if changed:
            marked += 1
            log.warning(
                "audit event %s: its call's outcome was lost (%s); recorded as %s",
                row.event_id,
                "its process stopped" if writer.is_gone(marker) else "no outcome after the wait",
                UNKNOWN_CODE,
            )
    return marked, waiting
