"""LookupEvents: the caller's account's events in the request's Region, newest first.

Paging is keyset paging on the trail's sequence number; the token also carries a fingerprint of the
filters, so (as in AWS) a token is only accepted with the parameters of the call that returned it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.storage import schema

DEFAULT_MAX_RESULTS = 50
_EVENTS = schema.audit_events
# CloudTrail answers bad input with its own exceptions rather than a ValidationException.
_VALIDATION_CODES = (
    ("maxResults", "InvalidMaxResultsException"),
    ("eventCategory", "InvalidEventCategoryException"),
    ("lookupAttributes", "InvalidLookupAttributesException"),
)


class CloudTrailModel(ServiceModel):
    def __init__(self) -> None:
        super().__init__("cloudtrail")

    def validate(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(operation, params)
        except AWSError as error:
            if error.code != "ValidationException":
                raise
            for member, code in _VALIDATION_CODES:
                if f"'{member}" in (error.message or ""):
                    raise AWSError(code, error.message) from None
            raise


def _line_match(column: Any, value: str) -> ColumnElement[bool]:
    """``column`` holds newline-separated names; match one of them exactly."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(
        column == value,
        column.like(f"{escaped}\n%", escape="\\"),
        column.like(f"%\n{escaped}", escape="\\"),
        column.like(f"%\n{escaped}\n%", escape="\\"),
    )


def _attribute_filter(key: str, value: str) -> ColumnElement[bool]:
    if key == "ReadOnly":
        if value.lower() not in ("true", "false"):
            raise AWSError(
                "InvalidLookupAttributesException", "ReadOnly lookup attribute value must be true or false."
            )
        return _EVENTS.c.read_only == (value.lower() == "true")
    if key == "ResourceName":
        return _line_match(_EVENTS.c.resource_names, value)
    if key == "ResourceType":
        return _line_match(_EVENTS.c.resource_types, value)
    column = {
        "EventId": _EVENTS.c.event_id,
        "EventName": _EVENTS.c.event_name,
        "Username": _EVENTS.c.username,
        "EventSource": _EVENTS.c.event_source,
        "AccessKeyId": _EVENTS.c.access_key_id,
    }[key]
    return column == value


def _fingerprint(params: dict[str, Any]) -> str:
    basis = {
        "attributes": [[a["AttributeKey"], a["AttributeValue"]] for a in params.get("LookupAttributes", [])],
        "start": params["StartTime"].timestamp() if "StartTime" in params else None,
        "end": params["EndTime"].timestamp() if "EndTime" in params else None,
        "category": params.get("EventCategory"),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _encode_token(seq: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([seq, fingerprint]).encode()).decode()


def _decode_token(token: str, fingerprint: str) -> int:
    invalid = AWSError("InvalidNextTokenException", "Invalid NextToken.")
    try:
        seq, expected = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise invalid from None
    if not isinstance(seq, int) or expected != fingerprint:
        raise invalid
    return seq


def _event(row: Any) -> dict[str, Any]:
    record = json.loads(row.record)
    event: dict[str, Any] = {
        "EventId": row.event_id,
        "EventName": row.event_name,
        "ReadOnly": "true" if row.read_only else "false",
    }
    if row.access_key_id:
        event["AccessKeyId"] = row.access_key_id
    event["EventTime"] = datetime.fromtimestamp(row.event_time, UTC)
    event["EventSource"] = row.event_source
    if row.username:
        event["Username"] = row.username
    event["Resources"] = [
        {"ResourceType": resource.get("type"), "ResourceName": resource.get("ARN")}
        for resource in record.get("resources") or []
    ]
    event["CloudTrailEvent"] = row.record
    return event


def lookup_events(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised before it runs, as ``cloudtrail:LookupEvents`` on ``*`` (see cloudtrail/__init__.py)."""
    attributes = params.get("LookupAttributes", [])
    if len(attributes) > 1:
        raise AWSError(
            "InvalidLookupAttributesException", "You cannot specify more than one lookup attribute."
        )
    start, end = params.get("StartTime"), params.get("EndTime")
    if start is not None and end is not None and start > end:
        raise AWSError("InvalidTimeRangeException", "Start time must not be after end time.")
    fingerprint = _fingerprint(params)
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
        .where(_EVENTS.c.account_id == ctx.account_id)
        .where(_EVENTS.c.region == ctx.region)
    )
    for attribute in attributes:
        query = query.where(_attribute_filter(attribute["AttributeKey"], attribute["AttributeValue"]))
    if start is not None:
        query = query.where(_EVENTS.c.event_time >= start.timestamp())
    if end is not None:
        query = query.where(_EVENTS.c.event_time <= end.timestamp())
    if params.get("NextToken"):
        query = query.where(_EVENTS.c.seq < _decode_token(params["NextToken"], fingerprint))
    if params.get("EventCategory") == "insight":
        return {"Events": []}  # Khoa has no Insights events
    limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
    with ctx.runtime.engine.connect() as conn:
        rows = conn.execute(query.order_by(_EVENTS.c.seq.desc()).limit(limit + 1)).all()
    result: dict[str, Any] = {"Events": [_event(row) for row in rows[:limit]]}
    if len(rows) > limit:
        result["NextToken"] = _encode_token(rows[limit - 1].seq, fingerprint)
    return result


OPERATIONS = {"LookupEvents": lookup_events}
