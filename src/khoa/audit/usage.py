"""When each key was last used, kept from the audit trail.

GetKeyLastUsage (the newest successful cryptographic call naming a KMS key), GetAccessKeyLastUsed (the
newest call authenticated with a long-term access key), the ``key-deletion-scheduled`` alert and
``khoa review`` (keys pending deletion but still used; principals allowed access they never use) ask
"when was this key (or principal) last used?". Searching the trail backwards for the key costs, for a
key used long ago or never, the whole trail: on a large one, past the database's statement timeout,
a 503 every time (and for the alert engine, a pass that fails on every retry). And retention takes
the answer away with the events.

So the leader follows the trail (:class:`UsageTracker`, a job) and keeps the newest use of each key
and principal in ``audit_key_usage``, ``audit_access_key_usage`` and ``audit_principal_usage``, one
row each, with a cursor of its own
(``audit_delivery``'s row "usage": sequence numbers passed before their transactions committed are
held and read when they appear, as log file delivery does). A question (:class:`UsageReader`) reads
the key's row and the events the tracker has not reached yet: normally one job interval's worth.

Newest means latest by (event time, sequence number), which survives the sequence starting again
(SQLite reuses numbers once the trail is emptied).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Table,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from khoa.audit import cursors
from khoa.protocol.errors import AWSError
from khoa.sequence import GapPolicy, SequenceCursor
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

# The cryptographic operations GetKeyLastUsage reports (AWS's list: successful calls that use the key).
KEY_USE_OPERATIONS = (
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
)
# What a principal's use of access is (khoa review's unused access): a successful secret read or key use.
PRINCIPAL_USE_OPERATIONS = ("GetSecretValue", "BatchGetSecretValue", *KEY_USE_OPERATIONS)
# Long-term access keys (IAM users' and the root's); STS session keys (ASIA...) are not tracked:
# GetAccessKeyLastUsed is not asked about them, and there is one per session.
LONG_TERM_KEY_PREFIX = "AKIA"
CURSOR_NAME = "usage"
# Sequence numbers a tracker reads at a time, and windows and seconds per pass: a pass after a long
# pause (or the first, over an existing trail) catches up over several passes rather than one long
# one, which would hold the leader's other jobs (the tracker runs between them, in their lane).
WINDOW = 10_000
MAX_WINDOWS_PER_PASS = 100
PASS_SECONDS = 5.0
# Windows of events not counted yet that a question reads at most (normally one or two: a job
# interval's worth). Further behind (the first passes over a large trail after the upgrade, or a
# leader that has not run for long) a question is refused with a 503 rather than read the backlog.
MAX_TAIL_WINDOWS = 30
_GAPS = GapPolicy("key usage", 60.0)
_IN_CHUNK = 500

_EVENTS = schema.audit_events
_KEYS = schema.audit_key_usage
_ACCESS_KEYS = schema.audit_access_key_usage
_PRINCIPALS = schema.audit_principal_usage


class UsageBehind(AWSError):
    """The last-use tables are further behind the trail than a question may read (503: retry)."""

    def __init__(self) -> None:
        super().__init__(
            "ServiceUnavailableException",
            "Key usage is still being counted from the audit trail. Try again later.",
            503,
        )


@dataclass(frozen=True)
class KeyUse:
    """The newest successful cryptographic call with a KMS key."""

    key_arn: str
    seq: int
    event_time: float
    operation: str
    event_id: str
    request_id: str | None


@dataclass(frozen=True)
class AccessKeyUse:
    """The newest call signed with an access key: when, to which service, in which Region."""

    account_id: str
    access_key_id: str
    seq: int
    event_time: float
    event_source: str
    region: str


def _newest(*uses: Any) -> Any:
    """The newest of some uses (None among them ignored), by (event time, sequence number)."""
    present = [use for use in uses if use is not None]
    return max(present, key=lambda use: (use.event_time, use.seq)) if present else None


def _is_key_use() -> ColumnElement[bool]:
    c = _EVENTS.c
    return and_(
        c.event_source == "kms.amazonaws.com",
        c.event_name.in_(KEY_USE_OPERATIONS),
        c.error_code.is_(None),
        c.resource_names.is_not(None),
    )


def _is_principal_use() -> ColumnElement[bool]:
    c = _EVENTS.c
    return and_(
        c.event_name.in_(PRINCIPAL_USE_OPERATIONS), c.error_code.is_(None), c.principal_arn.is_not(None)
    )


def _is_long_term_key_use() -> ColumnElement[bool]:
    """A call authenticated with a long-term access key. A call that failed to authenticate names
    the key it claimed (anyone can claim any key id): it is no use of the key, and counting it would
    let anyone add rows for made-up keys."""
    c = _EVENTS.c
    return and_(c.access_key_id.like(LONG_TERM_KEY_PREFIX + "%"), c.principal_arn.is_not(None))


def _key_arns(resource_names: str | None) -> list[str]:
    """The KMS key ARNs an event names (resource_names holds one ARN per line)."""
    return [name for name in (resource_names or "").split("\n") if ":key/" in name and len(name) <= 256]


def _read_cursor(conn: Connection) -> cursors.StoredCursor:
    return cursors.read(conn, CURSOR_NAME)


def _not_counted(
    conn: Connection, cursor: SequenceCursor, max_windows: int | None
) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]]]:
    """Conditions that together cover the events the tables do not hold yet: windows of at most
    :data:`WINDOW` sequence numbers from the newest event down to the cursor, newest first, and the
    numbers the cursor holds (below it). Closed ranges of the primary key, because PostgreSQL,
    without statistics for the trail, plans an open one ("after the cursor") as a scan of the whole
    table. :class:`UsageBehind` when that is more than ``max_windows`` windows (None: no bound)."""
    seq = _EVENTS.c.seq
    newest = int(conn.execute(select(func.max(seq))).scalar() or 0)
    floor = cursor.position if newest >= cursor.position else 0  # numbering started again
    if max_windows is not None and newest - floor > max_windows * WINDOW:
        raise UsageBehind()
    windows: list[ColumnElement[bool]] = []
    while newest > floor:
        low = max(floor + 1, newest - WINDOW + 1)
        windows.append(and_(seq >= low, seq <= newest))
        newest = low - 1
    wanted = cursor.wanted()
    held: list[ColumnElement[bool]] = [
        seq.in_(wanted[start : start + _IN_CHUNK]) for start in range(0, len(wanted), _IN_CHUNK)
    ]
    return windows, held


def _newest_not_counted(
    conn: Connection,
    cursor: SequenceCursor,
    max_windows: int | None,
    query: Callable[[ColumnElement[bool]], Select[Any]],
) -> Row[Any] | None:
    """The newest row ``query`` finds among the events not counted yet (by sequence number): the
    windows newest first, stopping at the first that has one, and the held numbers."""
    windows, held = _not_counted(conn, cursor, max_windows)
    found: list[Row[Any]] = []
    for window in windows:
        row = conn.execute(query(window).order_by(_EVENTS.c.seq.desc()).limit(1)).first()
        if row is not None:
            found.append(row)
            break
    for chunk in held:
        found.extend(conn.execute(query(chunk)).all())
    return max(found, key=lambda row: (row.event_time, row.seq)) if found else None


def _newest_signed_not_counted(
    conn: Connection, cursor: SequenceCursor, max_windows: int | None, account_id: str, access_key_id: str
) -> AccessKeyUse | None:
    """The newest event not counted yet of ``account_id``'s trail signed with ``access_key_id``.

    The account is picked in Python from the newest event per account of each window: with the
    account in the WHERE clause, PostgreSQL reads the window through the (account, time) index,
    which walks every event the account ever recorded."""
    c = _EVENTS.c
    columns = (c.seq, c.event_time, c.event_source, c.region, c.account_id)
    windows, held = _not_counted(conn, cursor, max_windows)
    found: list[Row[Any]] = []
    for window in windows:
        newest: dict[str, int] = {
            account: int(seq)
            for account, seq in conn.execute(
                select(c.account_id, func.max(c.seq))
                .where(window, c.access_key_id == access_key_id, c.principal_arn.is_not(None))
                .group_by(c.account_id)
            )
        }
        if account_id in newest:
            found.extend(conn.execute(select(*columns).where(c.seq == newest[account_id])).all())
            break
    for chunk in held:
        signed = select(*columns).where(chunk, c.access_key_id == access_key_id, c.principal_arn.is_not(None))
        found.extend(conn.execute(signed).all())
    uses = [
        AccessKeyUse(
            account_id, access_key_id, int(row.seq), float(row.event_time), row.event_source, row.region
        )
        for row in found
        if row.account_id == account_id
    ]
    return _newest(*uses)


class UsageReader:
    """Answers "when was this key last used?" from the tables and the events not counted yet (at
    most ``max_tail_windows`` windows of them, else :class:`UsageBehind`; None: all, for ``khoa
    review``, which would rather wait than guess)."""

    def __init__(self, engine: Engine, max_tail_windows: int | None = MAX_TAIL_WINDOWS) -> None:
        self._engine = engine
        self._max_windows = max_tail_windows

    def key_last_use(self, key_arn: str, since: float) -> KeyUse | None:
        """The newest successful cryptographic call naming ``key_arn`` at or after ``since`` (the
        key's creation, where tracking starts)."""
        c = _EVENTS.c
        with self._engine.connect() as conn:
            # The cursor first: the rows read after it hold at least everything up to it.
            cursor = _read_cursor(conn).cursor
            kept = conn.execute(select(_KEYS).where(_KEYS.c.key_arn == key_arn)).first()
            tail = _newest_not_counted(
                conn,
                cursor,
                self._max_windows,
                lambda span: select(c.seq, c.event_time, c.event_name, c.event_id, c.record).where(
                    span, _is_key_use(), c.resource_names.contains(key_arn, autoescape=True)
                ),
            )
        use = _newest(
            None if kept is None else KeyUse(**kept._mapping),
            None if tail is None else _key_use(key_arn, tail),
        )
        return use if use is not None and use.event_time >= since else None

    def keys_last_use(self, key_arns: Sequence[str]) -> dict[str, KeyUse]:
        """The newest use of each of ``key_arns`` that was ever used (``khoa review``)."""
        wanted = set(key_arns)
        arns = sorted(wanted)
        found: dict[str, KeyUse] = {}
        c = _EVENTS.c
        with self._engine.connect() as conn:
            cursor = _read_cursor(conn).cursor
            for start in range(0, len(arns), _IN_CHUNK):
                chunk = arns[start : start + _IN_CHUNK]
                for row in conn.execute(select(_KEYS).where(_KEYS.c.key_arn.in_(chunk))):
                    found[row.key_arn] = KeyUse(**row._mapping)
            windows, held = _not_counted(conn, cursor, self._max_windows)
            for span in [*windows, *held]:
                newest = select(func.max(c.seq)).where(span, _is_key_use()).group_by(c.resource_names)
                rows = conn.execute(
                    select(c.seq, c.event_time, c.event_name, c.event_id, c.record, c.resource_names).where(
                        c.seq.in_(newest.scalar_subquery())
                    )
                )
                for row in rows:
                    for arn in _key_arns(row.resource_names):
                        if arn in wanted:
                            found[arn] = _newest(found.get(arn), _key_use(arn, row))
        return found

    def principals_used_since(self, since: float) -> set[str]:
        """The principals (ARNs) that read a secret or used a key successfully at or after
        ``since`` (``khoa review``'s unused access)."""
        c, t = _EVENTS.c, _PRINCIPALS.c
        with self._engine.connect() as conn:
            cursor = _read_cursor(conn).cursor
            used = set(conn.execute(select(t.principal_arn).where(t.event_time >= since)).scalars())
            windows, held = _not_counted(conn, cursor, self._max_windows)
            for span in [*windows, *held]:
                used.update(
                    conn.execute(
                        select(c.principal_arn)
                        .where(span, _is_principal_use(), c.event_time >= since)
                        .distinct()
                    ).scalars()
                )
        return used

    def access_key_last_use(self, account_id: str, access_key_id: str) -> AccessKeyUse | None:
        """The newest call of ``account_id``'s trail signed with ``access_key_id``."""
        t = _ACCESS_KEYS.c
        with self._engine.connect() as conn:
            cursor = _read_cursor(conn).cursor
            kept = conn.execute(
                select(_ACCESS_KEYS).where(t.account_id == account_id, t.access_key_id == access_key_id)
            ).first()
            tail = _newest_signed_not_counted(conn, cursor, self._max_windows, account_id, access_key_id)
        return _newest(None if kept is None else AccessKeyUse(**kept._mapping), tail)


def _key_use(key_arn: str, row: Row[Any]) -> KeyUse:
    """A use of ``key_arn`` from an event row (seq, event_time, event_name, event_id, record)."""
    try:
        request_id = json.loads(row.record).get("requestID")
    except (ValueError, AttributeError):
        request_id = None
    return KeyUse(
        key_arn,
        int(row.seq),
        float(row.event_time),
        row.event_name,
        row.event_id,
        request_id if isinstance(request_id, str) and len(request_id) <= 128 else None,
    )


class UsageTracker:
    """The leader's job: counts new events into the last-use tables, window by window.

    Each window is a range of at most :data:`WINDOW` sequence numbers read by the primary key, with
    the newest event per key picked in SQL (``GROUP BY`` with ``max(seq)``), so only one row per key
    and window reaches Python. A window's rows and the moved cursor commit together, guarded by the
    cursor as read: a second tracker (a leader that lost its lease mid-pass) cannot count twice."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def run(self, now: datetime) -> None:
        """Count what the trail held when the pass began (what comes meanwhile waits for the next
        pass: a busy trail must not keep one pass chasing its head)."""
        at = now.timestamp()
        with self._engine.connect() as conn:
            newest = int(conn.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0)
        deadline = time.monotonic() + PASS_SECONDS
        for _ in range(MAX_WINDOWS_PER_PASS):
            if not self.step(at, newest) or time.monotonic() >= deadline:
                break

    def step(self, at: float, newest: int) -> bool:
        """Count one window up to sequence number ``newest`` (and held numbers that appeared); True
        when more events up to ``newest`` wait."""
        with self._engine.connect() as conn:
            state = _read_cursor(conn)
            cursor = state.cursor
            if cursor.position > newest:
                log.warning(
                    "key usage: the trail's sequence went back below %d; counting from the start",
                    cursor.position,
                )
                cursor = SequenceCursor()
            seqs, upto = _window(conn, cursor.position, newest)
            # Held numbers are looked for a chunk at a time (a long list waits for later passes).
            wanted = cursor.wanted()[:_IN_CHUNK]
            late = (
                [int(seq) for (seq,) in conn.execute(select(_EVENTS.c.seq).where(_EVENTS.c.seq.in_(wanted)))]
                if wanted
                else []
            )
            if not seqs and not late and not wanted:
                return False
            uses = _uses(conn, _newest_per_key(conn, cursor.position, upto, late))
        moved, _ = cursor.advance([*seqs, *late], at, _GAPS, upto=upto if seqs else None)
        try:
            with self._engine.begin() as conn:
                _keep_newest(conn, _KEYS, ("key_arn",), list(uses.keys.values()))
                _keep_newest(
                    conn, _ACCESS_KEYS, ("account_id", "access_key_id"), list(uses.access_keys.values())
                )
                _keep_newest(conn, _PRINCIPALS, ("principal_arn",), list(uses.principals.values()))
                if not cursors.move(conn, CURSOR_NAME, state.stored, moved, at):
                    log.warning(
                        "key usage: another process moved the cursor first; leaving this window to it"
                    )
                    return False
        except IntegrityError:
            log.warning("key usage: another process counted these events first")
            return False
        return bool(seqs) and upto < newest


def _window(conn: Connection, after: int, newest: int) -> tuple[list[int], int]:
    """The sequence numbers present in the next window after ``after`` (it starts at the first event
    after it: a gap before that is the cursor's to judge) and up to ``newest``, ascending, and the
    window's last number."""
    seq = _EVENTS.c.seq
    first = conn.execute(select(func.min(seq)).where(seq > after, seq <= newest)).scalar()
    if first is None:
        return [], after
    first = int(first)
    upto = min(newest, first + WINDOW - 1)
    count, last = conn.execute(select(func.count(), func.max(seq)).where(seq >= first, seq <= upto)).one()
    if count and int(last) - first + 1 == count:
        return list(range(first, int(last) + 1)), upto  # no gaps: SQLite's rowids, PostgreSQL at rest
    return sorted(int(s) for (s,) in conn.execute(select(seq).where(seq >= first, seq <= upto))), upto


def _newest_per_key(conn: Connection, after: int, upto: int, late: list[int]) -> list[int]:
    """The sequence numbers of the newest use per group of alike events in the window and among
    ``late`` (held numbers that appeared): per KMS resource list, per (account, access key) and per
    principal."""
    c = _EVENTS.c
    span: ColumnElement[bool] = and_(c.seq > after, c.seq <= upto)
    if late:
        span = or_(span, c.seq.in_(late))
    groups = (
        (_is_key_use(), (c.resource_names,)),
        (_is_long_term_key_use(), (c.account_id, c.access_key_id)),
        (_is_principal_use(), (c.principal_arn,)),
    )
    picks = {
        int(seq)
        for condition, by in groups
        for seq in conn.execute(select(func.max(c.seq)).where(span, condition).group_by(*by)).scalars()
        if seq is not None
    }
    return sorted(picks)


@dataclass
class _Uses:
    """The newest use per key of a window: KMS keys by ARN, access keys by (account, id),
    principals by ARN; each a row of its table."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    principals: dict[str, dict[str, Any]] = field(default_factory=dict)


def _keep(found: dict[Any, dict[str, Any]], where: Any, row: dict[str, Any]) -> None:
    """Keep ``row`` as the use at ``where`` unless a newer one is there."""
    kept = found.get(where)
    if kept is None or (row["event_time"], row["seq"]) > (kept["event_time"], kept["seq"]):
        found[where] = row


def _uses(conn: Connection, picks: list[int]) -> _Uses:
    """The uses the picked events make, the newest per key."""
    c = _EVENTS.c
    uses = _Uses()
    columns = (
        c.seq,
        c.event_time,
        c.event_name,
        c.event_id,
        c.record,
        c.resource_names,
        c.event_source,
        c.error_code,
        c.region,
        c.account_id,
        c.access_key_id,
        c.principal_arn,
    )
    for start in range(0, len(picks), _IN_CHUNK):
        for row in conn.execute(select(*columns).where(c.seq.in_(picks[start : start + _IN_CHUNK]))):
            seq, when = int(row.seq), float(row.event_time)
            succeeded = row.error_code is None
            if row.event_source == "kms.amazonaws.com" and row.event_name in KEY_USE_OPERATIONS and succeeded:
                for arn in _key_arns(row.resource_names):
                    _keep(uses.keys, arn, asdict(_key_use(arn, row)))
            if row.principal_arn and row.access_key_id and row.access_key_id.startswith(LONG_TERM_KEY_PREFIX):
                use = AccessKeyUse(row.account_id, row.access_key_id, seq, when, row.event_source, row.region)
                _keep(uses.access_keys, (row.account_id, row.access_key_id), asdict(use))
            if row.principal_arn and row.event_name in PRINCIPAL_USE_OPERATIONS and succeeded:
                principal = {"principal_arn": row.principal_arn, "seq": seq, "event_time": when}
                _keep(uses.principals, row.principal_arn, principal)
    return uses


def _keep_newest(conn: Connection, table: Table, key: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (one per ``key``) into ``table``: inserted where the key has no row yet,
    replacing one only when newer by (event time, sequence number)."""
    if not rows:
        return
    columns = [table.c[name] for name in key]
    last = table.c[key[-1]]  # the most selective part of the key
    wanted = sorted({row[key[-1]] for row in rows})
    stored: dict[tuple[Any, ...], tuple[float, int]] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        for found in conn.execute(select(*columns, table.c.event_time, table.c.seq).where(last.in_(chunk))):
            stored[tuple(found[: len(key)])] = (float(found.event_time), int(found.seq))
    fresh: list[dict[str, Any]] = []
    for row in rows:
        where = tuple(row[name] for name in key)
        if where not in stored:
            fresh.append(row)
        elif (row["event_time"], row["seq"]) > stored[where]:
            conn.execute(
                update(table).where(*(c == v for c, v in zip(columns, where, strict=True))).values(row)
            )
    if fresh:
        conn.execute(insert(table), fresh)


def counted_until(engine: Engine) -> int:
    """The tracker's position (0 before its first pass): retention must not remove events past it."""
    with engine.connect() as conn:
        return _read_cursor(conn).cursor.position
