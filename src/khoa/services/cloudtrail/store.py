"""Where CloudTrail's SQL lives: reading the audit trail (``audit_events``) newest first, filtered as
LookupEvents asks. Khoa's audit recorder writes the trail; CloudTrail only reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, or_, select

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
    ) -> list[Row[Any]]:
        """Up to ``limit`` of the account's events in ``region``, newest first (by event time, then
        sequence number): those matching the lookup ``attribute`` (key, value), between ``start`` and
        ``end`` (inclusive), and after ``before``, the (event time, sequence number) of the last
        event of the previous page (keyset paging). The lookup index holds the events in this
        order, so a page reads only its own rows (and those a lookup attribute skips)."""
        query = (
            select(
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
            .where(_EVENTS.c.account_id == account_id)
            .where(_EVENTS.c.region == region)
        )
        if attribute is not None:
            query = query.where(_attribute_filter(*attribute))
        if start is not None:
            query = query.where(_EVENTS.c.event_time >= start.timestamp())
        if end is not None:
            query = query.where(_EVENTS.c.event_time <= end.timestamp())
        if before is not None:
            at, seq = before
            query = query.where(
                _EVENTS.c.event_time <= at,
                or_(_EVENTS.c.event_time < at, _EVENTS.c.seq < seq),
            )
        newest_first = (_EVENTS.c.event_time.desc(), _EVENTS.c.seq.desc())
        with self._engine.connect() as conn:
            return list(conn.execute(query.order_by(*newest_first).limit(limit)).all())
