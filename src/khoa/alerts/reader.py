"""Reading the audit trail for the alert engine: which stored columns make an event, and which events
of a batch the rules must see.

The leader reads every event, on a thread that shares the GIL with the event loop, so the batch
statements are compiled once and run on the driver's own cursor (SQLAlchemy's per-statement
compilation and row objects would cost more than the rules), and routine events are counted and
grouped in SQL rather than in Python (see ``docs/architecture.md``, "re-reading").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Dialect, Integer, Select, and_, bindparam, func, not_, or_, select

from khoa.alerts.model import Event
from khoa.storage import schema

_EVENTS = schema.audit_events


def event_columns() -> list[Any]:
    """The ``audit_events`` columns an :class:`~khoa.alerts.model.Event` is built from, in its field
    order."""
    c = _EVENTS.c
    return [
        c.seq,
        c.event_id,
        c.account_id,
        c.region,
        c.event_time,
        c.event_source,
        c.event_name,
        c.read_only,
        c.error_code,
        c.access_key_id,
        c.record,
        c.resource_names,
        c.event_type,
        c.principal_arn,
        c.source_ip,
    ]


def event_from_row(row: Any) -> Event:
    """An event from a row selected with :func:`event_columns` (whose order is Event's field order:
    positional construction, because reading fifteen attributes by name cost more than the rule)."""
    return Event(*row)


# A routine event: a successful, authenticated, read-only call whose record no rule needs beyond
# the stored columns. BatchGetSecretValue names its secrets only in the record; a GetSecretValue
# without a resource has only the record's secretId.
_ROUTINE = and_(
    _EVENTS.c.read_only.is_(True),
    _EVENTS.c.error_code.is_(None),
    _EVENTS.c.event_type == "AwsApiCall",
    _EVENTS.c.principal_arn.is_not(None),
    _EVENTS.c.event_name != "BatchGetSecretValue",
    or_(_EVENTS.c.resource_names.is_not(None), _EVENTS.c.event_name != "GetSecretValue"),
)
# What every rule asks of a routine event (and nothing else): the same values, the same verdicts.
_ROUTINE_KEY = (
    _EVENTS.c.account_id,
    _EVENTS.c.region,
    _EVENTS.c.event_source,
    _EVENTS.c.event_name,
    _EVENTS.c.resource_names,
    _EVENTS.c.principal_arn,
    _EVENTS.c.source_ip,
    _EVENTS.c.access_key_id,
)


class TrailReader:
    """Reads new audit events for a pass through the driver's own cursor, with its statements
    compiled once: SQLAlchemy's compilation and row objects would cost more per batch and per event
    than the rules (the leader reads every event, on a thread that shares the GIL with the event
    loop)."""

    def __init__(self, dialect: Dialect) -> None:
        c = _EVENTS.c
        after, first, last = (bindparam(name, 0, type_=Integer()) for name in ("after", "first", "last"))
        # Every statement reads a bounded range of the primary key and none asks for an order (the
        # caller sorts): "the next N after the cursor, in order" was planned, on a table without
        # fresh statistics, as a scan of everything after the cursor and a sort, on every pass.
        window = and_(c.seq >= first, c.seq <= last)
        batch = and_(c.seq > after, c.seq <= last)
        firsts = select(func.min(c.seq)).where(batch, _ROUTINE).group_by(*_ROUTINE_KEY)
        self._first = _Prepared(select(func.min(c.seq)).where(c.seq > after), dialect)
        self._span = _Prepared(select(func.count(), func.max(c.seq)).where(window), dialect)
        self._seqs = _Prepared(select(c.seq).where(window), dialect)
        self._events = _Prepared(
            select(*event_columns()).where(batch, or_(not_(_ROUTINE), c.seq.in_(firsts))), dialect
        )

    def read(self, conn: Connection, after: int, limit: int) -> tuple[list[int], list[Event]]:
        """The sequence numbers of the events in the next window of ``limit`` numbers after
        ``after`` (it starts at the first event after it: a gap before that is the cursor's to
        judge), ascending, and the events among them that rules must see, in no particular order:
        every event that is not routine, and the first of each group of routine events alike in
        everything rules ask of them (a busy application reads one secret thousands of times
        between two passes, all alike). Counting and grouping happen in SQL, so only the few rows
        that can tell rules something new reach Python."""
        [(first,)] = self._first.rows(conn, after=after)
        if first is None:
            return [], []
        [(count, last)] = self._span.rows(conn, first=first, last=first + limit - 1)
        if not count:  # removed in between (retention): the next pass looks again
            return [], []
        if last - first + 1 == count:
            seqs = list(range(first, last + 1))  # no gaps: SQLite's rowids, PostgreSQL at rest
        else:
            seqs = sorted(seq for (seq,) in self._seqs.rows(conn, first=first, last=last))
        return seqs, [Event(*row) for row in self._events.rows(conn, after=after, last=last)]


class _Prepared:
    """A statement compiled for one dialect, run on the DB-API cursor with named values."""

    def __init__(self, query: Select[Any], dialect: Dialect) -> None:
        compiled = query.compile(dialect=dialect)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ()) if compiled.positional else None
        self.constants = compiled.construct_params()  # the query's own literals, by name

    def rows(self, conn: Connection, **values: Any) -> list[tuple[Any, ...]]:
        params = {**self.constants, **values}
        args = tuple(params[name] for name in self.names) if self.names is not None else params
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()
