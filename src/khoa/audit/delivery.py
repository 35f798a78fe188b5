"""Delivery of recorded events, in sequence order, to gzipped CloudTrail log files.

Events recorded in ``audit_events`` go into log files (``{"Records": [...]}``), one per (account,
Region) per batch. Delivery keeps a cursor (``audit_delivery``): every event up to its sequence number
is in a log file, except numbers it passed before their transactions committed (PostgreSQL hands out
sequence numbers in one order and commits in another), which it holds and delivers when they appear
(a :class:`khoa.sequence.SequenceCursor`, persisted as the row's ``delivered_seq`` and ``held``). A
cursor costs one row per pass where marking each delivered event cost an UPDATE per event.

A batch's files are staged, their rows (each with the file's bytes: the database holds the complete
trail, however many nodes took turns delivering it) and the new cursor committed in one transaction
guarded by the cursor read before, then published (:mod:`khoa.audit.files`): a second writer cannot
deliver the same events, and a crash leaves nothing the database does not know about.

A write's first record, made before the call ran, waits for its outcome (:mod:`khoa.audit.outcomes`)
and is never delivered as it is: it would read as a success. When its outcome is lost (its writer is
gone, or it has waited longer than any call runs) the unknown outcome is delivered, and its row
changed to the same record in the batch's transaction, only if the row still holds the record read
(an outcome that arrived meanwhile wins: the batch is read again). Otherwise the pass delivers the
events before it and stops there, the cursor just before it, and the next pass looks again; one
that committed late (held below the cursor) stays held.
"""

from __future__ import annotations

import gzip
import logging
import operator
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.audit import cursors
from khoa.audit.errors import TrailConflict
from khoa.audit.files import AuditFiles
from khoa.audit.formats import log_file_content, log_file_key, safe_account, safe_region, sha256_hex
from khoa.audit.outcomes import (
    OUTCOME_WAIT_SECONDS,
    PENDING_TEXT,
    UNKNOWN_CODE,
    Writer,
    pending_marker,
    unknown_outcome_text,
)
from khoa.sequence import GapPolicy, SequenceCursor
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

MAX_RECORDS_PER_FILE = 5000
# zlib's fast levels (1-3) compress a log file at twice the speed of the default (6) for ~12% more
# bytes: delivery keeps pace with the trail on the leader, beside its share of requests.
COMPRESS_LEVEL = 3
# Delivery waits this long for a sequence number it passed to appear (a transaction that had taken
# it but not committed): see khoa.sequence.
GAP_SECONDS = 60.0
_GAPS = GapPolicy("audit trail", GAP_SECONDS)
_DELIVERY_NAME = "trail"
_UNIQUE_ALPHABET = string.ascii_letters + string.digits

_EVENTS = schema.audit_events
_FILES = schema.audit_log_files
_seq = operator.attrgetter("seq")
_COLUMNS = (
    _EVENTS.c.seq,
    _EVENTS.c.account_id,
    _EVENTS.c.region,
    _EVENTS.c.event_time,
    _EVENTS.c.record,
    _EVENTS.c.log_file,
)


class OutcomeArrived(TrailConflict):
    """A record delivery was about to deliver as outcome unknown got its outcome (or was marked) first."""


@dataclass(frozen=True)
class _Unknown:
    """An event whose outcome was lost, as delivered: its row's values with the unknown outcome as
    ``record``, and ``stored``, the record its row held when read (the update's guard)."""

    seq: int
    account_id: str
    region: str
    event_time: float
    record: str
    stored: str
    log_file: None = None


@dataclass(frozen=True)
class DeliveryState:
    """The delivery cursor as read (``stored``: the row's values, for the guarded update; None
    before the first delivery)."""

    cursor: SequenceCursor
    stored: tuple[int, str] | None

    @property
    def delivered_seq(self) -> int:
        return self.cursor.position

    @property
    def held(self) -> Mapping[int, float]:
        return self.cursor.held


class Delivery:
    """Moves events into log files. ``renew`` is called after each batch, to keep the writer's lease
    while a long backlog is delivered. ``writer`` (this process's) tells whose records' outcomes are
    lost; ``outcome_wait_seconds``: how long a record may wait for its outcome."""

    def __init__(
        self,
        engine: Engine,
        files: AuditFiles,
        renew: Callable[[], object],
        writer: Writer | None = None,
        outcome_wait_seconds: float = OUTCOME_WAIT_SECONDS,
    ) -> None:
        self.engine = engine
        self.files = files
        self.renew = renew
        self.writer = writer if writer is not None else Writer.this_process()
        self.outcome_wait_seconds = outcome_wait_seconds
        # The event the latest deliver() stopped before, waiting for its outcome (None: it did not).
        self.waiting: int | None = None

    def state(self) -> DeliveryState:
        with self.engine.connect() as conn:
            stored = cursors.read(conn, _DELIVERY_NAME)
        return DeliveryState(stored.cursor, stored.stored)

    def newest_event(self) -> int | None:
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(_EVENTS.c.seq))).scalar()
        return int(newest) if newest is not None else None

    def backlog(self) -> bool:
        newest = self.newest_event()
        return newest is not None and newest - self.state().delivered_seq >= MAX_RECORDS_PER_FILE

    def newest_pending(self) -> int | None:
        """The newest event not delivered yet (None when there is none)."""
        newest = self.newest_event()
        if newest is None or newest <= self.state().delivered_seq:
            return None
        return newest

    def deliver(self, now: float, watermark: int) -> list[str]:
        """Deliver undelivered events up to sequence number ``watermark``, in order.

        Each batch reads a window of at most :data:`MAX_RECORDS_PER_FILE` sequence numbers, starting
        at the first event after the cursor, by its primary key and with no ORDER BY or LIMIT: a
        query that asked PostgreSQL for "the first 5,000 after the cursor, in order" was planned,
        on a table without fresh statistics (autovacuum off, or a trail growing faster than it
        analyses), as a scan and an on-disk sort of the whole undelivered range for every batch, so
        a backlog cost time in proportion to its square."""
        delivered: list[str] = []
        conflicts = 0
        self.waiting = None
        while True:
            state = self.state()
            if state.delivered_seq > (self.newest_event() or 0):
                # The trail was emptied and numbering started again (SQLite reuses rowids).
                log.warning(
                    "audit trail: sequence went back below %d; delivering from the start", state.delivered_seq
                )
                state = DeliveryState(SequenceCursor(), state.stored)
            if state.delivered_seq >= watermark and not state.held:
                break
            with self.engine.connect() as conn:
                upto, fresh = self._window(conn, state.delivered_seq, watermark)
                wanted = state.cursor.wanted()
                late = (
                    conn.execute(select(*_COLUMNS).where(_EVENTS.c.seq.in_(wanted))).all() if wanted else []
                )
            # Records still waiting for their outcome: a late one stays held; at a fresh one the
            # window ends just before it (the cursor stops there) and so does this pass.
            late_rows, late_waiting = self._outcomes(sorted(late, key=_seq), now, stop=False)
            fresh_rows, fresh_waiting = self._outcomes(sorted(fresh, key=_seq), now, stop=True)
            self.waiting = fresh_waiting[0] if fresh_waiting else None
            if self.waiting is not None:
                upto = self.waiting - 1
            # Held numbers are all below the cursor, so this is sequence order.
            rows = late_rows + fresh_rows
            cursor, ready = state.cursor.advance((row.seq for row in rows), now, _GAPS, upto=upto)
            for seq in late_waiting:
                cursor = cursor.hold(seq, max(state.cursor.held.get(seq, now), now + GAP_SECONDS))
            # Rows with a log_file were delivered before revision 0011 (the old scheme marked rows).
            ready_now = set(ready)
            undelivered = [row for row in rows if row.log_file is None and row.seq in ready_now]
            try:
                delivered += self._deliver_files(undelivered, state, cursor, now)
            except OutcomeArrived:
                conflicts += 1
                if conflicts > 3:
                    raise
                log.info("audit trail: an outcome arrived while its event was being delivered; looking again")
                continue
            except TrailConflict:
                conflicts += 1
                if conflicts > 3:
                    raise
                log.warning("another process delivered some of these events first; looking again")
                continue
            self.renew()
            if self.waiting is not None or upto >= watermark:
                break
        return delivered

    def _outcomes(self, rows: list[Row[Any]], now: float, *, stop: bool) -> tuple[list[Any], list[int]]:
        """``rows`` with every record whose outcome is lost replaced by the unknown outcome
        (:class:`_Unknown`), without those still waiting for their outcome; and the sequence
        numbers of those. With ``stop``, the rows end before the first one still waiting, and only
        it is named. Records are looked at only when their text contains the marker."""
        out: list[Any] = []
        waiting: list[int] = []
        for row in rows:
            if row.log_file is None and PENDING_TEXT in row.record:
                found = pending_marker(row.record)
                if found is not None:
                    record, marker = found
                    if not self.writer.lost(marker, row.event_time, now, self.outcome_wait_seconds):
                        waiting.append(row.seq)
                        if stop:
                            break
                        continue
                    text = unknown_outcome_text(record)
                    out.append(
                        _Unknown(row.seq, row.account_id, row.region, row.event_time, text, row.record)
                    )
                    continue
            out.append(row)
        return out, waiting

    @staticmethod
    def _window(conn: Connection, after: int, watermark: int) -> tuple[int, list[Row[Any]]]:
        """The events of the next window after sequence number ``after``: the window's last number
        and its rows (unordered). The window starts at the first event after ``after`` (a gap before
        it is the cursor's to judge) and spans at most MAX_RECORDS_PER_FILE numbers, never past
        ``watermark``; with no event before the watermark it ends there."""
        seq = _EVENTS.c.seq
        first = conn.execute(select(func.min(seq)).where(seq > after, seq <= watermark)).scalar()
        if first is None:
            return max(after, watermark), []
        upto = min(watermark, int(first) + MAX_RECORDS_PER_FILE - 1)
        return upto, list(conn.execute(select(*_COLUMNS).where(seq >= first, seq <= upto)).all())

    def _deliver_files(
        self, rows: list[Any], state: DeliveryState, cursor: SequenceCursor, now: float
    ) -> list[str]:
        """Write one log file per (account, Region) of ``rows`` and move the cursor, all or nothing:
        files are staged, their rows, the events' unknown outcomes (:class:`_Unknown`) and the new
        cursor committed in one transaction (guarded by the cursor read before, so a second writer
        cannot deliver the same events, and by each changed event's record as read, so an outcome
        that arrived meanwhile is not overwritten: OutcomeArrived), then published."""
        groups = _files_of(rows)
        staged: list[tuple[Path, str]] = []
        values: list[dict[str, Any]] = []
        try:
            for (account_id, region), group in groups.items():
                times = [row.event_time for row in group]
                unique = "".join(secrets.choice(_UNIQUE_ALPHABET) for _ in range(16))
                key = log_file_key(account_id, region, now, unique)
                content = log_file_content([row.record for row in group])
                packed = gzip.compress(content, compresslevel=COMPRESS_LEVEL, mtime=0)
                staged.append((self.files.stage(key, packed), key))
                values.append(
                    {
                        "s3_object": key,
                        "account_id": account_id,
                        "region": region,
                        "hash_value": sha256_hex(content),
                        "oldest_event_time": min(times),
                        "newest_event_time": max(times),
                        "event_count": len(group),
                        "delivered_at": now,
                        "digest_id": None,
                        "content": packed,
                    }
                )
            try:
                with self.engine.begin() as conn:
                    self._record_unknown(conn, [row for row in rows if isinstance(row, _Unknown)])
                    if values:
                        conn.execute(insert(_FILES), values)
                    self._advance(conn, state, cursor, now)
            except IntegrityError as exc:
                raise TrailConflict("another process started delivering first") from exc
        except BaseException:
            for path, key in staged:
                self.files.drop_unless_recorded(path, key, _FILES)
            raise
        for path, key in staged:
            self.files.publish(path, key)
        for row in rows:
            if isinstance(row, _Unknown):
                log.warning(
                    "audit event %d: its call's outcome was lost; delivered as %s", row.seq, UNKNOWN_CODE
                )
        return [key for _, key in staged]

    @staticmethod
    def _record_unknown(conn: Connection, rows: list[_Unknown]) -> None:
        """Give each event its delivered record, only if its row still holds the record read."""
        for row in rows:
            changed = conn.execute(
                update(_EVENTS)
                .where(_EVENTS.c.seq == row.seq, _EVENTS.c.record == row.stored)
                .values(record=row.record, error_code=UNKNOWN_CODE)
            ).rowcount
            if changed != 1:
                raise OutcomeArrived(f"audit event {row.seq} changed while it was being delivered")

    @staticmethod
    def _advance(conn: Connection, state: DeliveryState, cursor: SequenceCursor, now: float) -> None:
        """Move the cursor, only if no other writer moved it since ``state`` was read."""
        if not cursors.move(conn, _DELIVERY_NAME, state.stored, cursor, now):
            raise TrailConflict("another process delivered some of these events first")


def _files_of(rows: list[Any]) -> dict[tuple[str, str], list[Any]]:
    """The rows of each log file, keyed by (account, Region) as they may appear in a path, each in
    sequence order. Grouped by the stored values first (one dictionary step per row), then each
    group's values checked once; groups whose values are not safe in a path share a file."""
    stored: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        key = (row.account_id, row.region)
        group = stored.get(key)
        if group is None:
            stored[key] = [row]
        else:
            group.append(row)
    files: dict[tuple[str, str], list[Any]] = {}
    for (account_id, region), group in stored.items():
        safe = (safe_account(account_id), safe_region(region))
        shared = files.get(safe)
        if shared is None:
            files[safe] = group
        else:
            shared.extend(group)
            shared.sort(key=_seq)
    return files
