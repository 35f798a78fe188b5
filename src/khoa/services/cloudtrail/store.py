"""Where CloudTrail's SQL lives: reading the audit trail (``audit_events``) newest first, filtered as
LookupEvents asks. Khoa's audit recorder writes the trail; CloudTrail only reads it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, and_, or_, select

from khoa.storage import schema

_EVENTS = schema.audit_events


def line_match(column: Any, value: str) -> ColumnElement[bool]:
    """``column`` holds newline-separated names; match one of them exactly (LIKE wildcards in
    ``value`` are taken literally)."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(
        column == value,
        column.like(f"{escaped}\n%", escape="\\"),
        column.like(f"%\n{escaped}", escape="\\"),
        column.like(f"%\n{escaped}\n%", escape="\\"),
    )


def _attribute_filter(key: str, value: str) -> ColumnElement[bool]:
    if key == "ReadOnly":
        return _EVENTS.c.read_only == (value.lower() == "true")
    if key == "ResourceName":
        return line_match(_EVENTS.c.resource_names, value)
    if key == "ResourceType":
        return line_match(_EVENTS.c.resource_types, value)
    column = {
        "EventId": _EVENTS.c.event_id,
        "EventName": _EVENTS.c.event_name,
        "Username": _EVENTS.c.username,
        "EventSource": _EVENTS.c.event_source,
        "AccessKeyId": _EVENTS.c.access_key_id,
    }[key]
    return column == value


# Events a LookupEvents page with a lookup attribute examines at most. Matching events are found by
# reading the account's events newest first: for a rare attribute value (a resource named once a
# year ago, an access key never used) that was every event of the account, past the statement
# timeout. A page that reaches the budget returns what it found with a NextToken to go on from there
# (CloudTrail too returns short and empty pages with a NextToken).
SCAN_BUDGET = 10_000


@dataclass(frozen=True)
class Page:
    """A page of events, newest first, and where the next page starts when the page ended because
    it had read its budget of events (the (event time, sequence number) of the last one read)."""

    rows: list[Row[Any]]
    scanned_to: tuple[float, int] | None = None


class TrailStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def events(
        self,
        account_id: str,
        region: str,
        *,
        attribute: tuple[str, str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before: tuple[float, int] | None = None,
        limit: int,
    ) -> Page:
        """Up to ``limit`` of the account's events in ``region``, newest first (by event time, then
        sequence number): those matching the lookup ``attribute`` (key, value), between ``start`` and
        ``end`` (inclusive), and after ``before``, the (event time, sequence number) of the last
        event of the previous page (keyset paging). The lookup index holds the events in this
        order, so a page reads only its own rows; with an ``attribute``, at most
        :data:`SCAN_BUDGET` rows (see :class:`Page`)."""
        c = _EVENTS.c
        conditions: list[ColumnElement[bool]] = [c.account_id == account_id, c.region == region]
        if start is not None:
            conditions.append(c.event_time >= start.timestamp())
        if end is not None:
            conditions.append(c.event_time <= end.timestamp())
        if before is not None:
            conditions.append(_older_than(*before))
        newest_first = (c.event_time.desc(), c.seq.desc())
        with self._engine.connect() as conn:
            scanned_to = None
            if attribute is not None:
                # The oldest event the budget reaches (read from the index alone); none: the rest
                # of the account's events are fewer than the budget.
                edge = conn.execute(
                    select(c.event_time, c.seq)
                    .where(*conditions)
                    .order_by(*newest_first)
                    .offset(SCAN_BUDGET - 1)
                    .limit(1)
                ).first()
                if edge is not None:
                    scanned_to = (float(edge.event_time), int(edge.seq))
                    conditions.append(_at_or_newer_than(*scanned_to))
                conditions.append(_attribute_filter(*attribute))
            rows = list(
                conn.execute(select(*_COLUMNS).where(*conditions).order_by(*newest_first).limit(limit))
            )
        return Page(rows, scanned_to if len(rows) < limit else None)


def _older_than(at: float, seq: int) -> ColumnElement[bool]:
    """Events after (older than) the one at ``at`` with sequence number ``seq``, newest first."""
    return and_(_EVENTS.c.event_time <= at, or_(_EVENTS.c.event_time < at, _EVENTS.c.seq < seq))


def _at_or_newer_than(at: float, seq: int) -> ColumnElement[bool]:
    """The event at ``at`` with sequence number ``seq`` and those before it, newest first (stated
    as a range of event times, which the lookup index can read; its negation could not be)."""
    return and_(_EVENTS.c.event_time >= at, or_(_EVENTS.c.event_time > at, _EVENTS.c.seq >= seq))


_COLUMNS = (
    _EVENTS.c.seq,
    _EVENTS.c.event_id,
    _EVENTS.c.event_name,
    _EVENTS.c.read_only,
    _EVENTS.c.access_key_id,
    _EVENTS.c.event_time,
    _EVENTS.c.event_source,
    _EVENTS.c.username,
    _EVENTS.c.record,
)
