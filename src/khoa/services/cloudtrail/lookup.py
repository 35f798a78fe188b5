"""LookupEvents: the caller's account's events in the request's Region, newest first.

Paging is keyset paging on (event time, sequence number); the token also carries a fingerprint of the
filters, so (as in AWS) a token is only accepted with the parameters of the call that returned it. A
page with a lookup attribute reads at most a budget of events (``store.SCAN_BUDGET``): it may hold
fewer events than asked for, or none, with a NextToken to go on (as CloudTrail's pages may).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.cloudtrail import errors
from khoa.services.cloudtrail.backend import CloudTrailBackend

DEFAULT_MAX_RESULTS = 50
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


def _attribute(attribute: dict[str, str]) -> tuple[str, str]:
    """The lookup attribute as (key, value), its value checked where CloudTrail restricts it."""
    key, value = attribute["AttributeKey"], attribute["AttributeValue"]
    if key == "ReadOnly" and value.lower() not in ("true", "false"):
        raise errors.invalid_lookup_attributes("ReadOnly lookup attribute value must be true or false.")
    return key, value


def _fingerprint(params: dict[str, Any]) -> str:
    basis = {
        "attributes": [[a["AttributeKey"], a["AttributeValue"]] for a in params.get("LookupAttributes", [])],
        "start": params["StartTime"].timestamp() if "StartTime" in params else None,
        "end": params["EndTime"].timestamp() if "EndTime" in params else None,
        "category": params.get("EventCategory"),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(at: float, seq: int, fingerprint: str) -> str:
    """The page's last event (its time and sequence number) and the request's fingerprint."""
    return base64.urlsafe_b64encode(json.dumps([at, seq, fingerprint]).encode()).decode()


def decode_token(token: str, fingerprint: str) -> tuple[float, int]:
    invalid = errors.invalid_next_token()
    try:
        at, seq, expected = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise invalid from None
    if (
        not isinstance(at, int | float)
        or isinstance(at, bool)
        or not math.isfinite(at)
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or not 0 <= seq < 2**63  # a sequence number both stores can compare (SQLite: 64-bit)
        or expected != fingerprint
    ):
        raise invalid
    return float(at), seq


def _event(row: Row[Any]) -> dict[str, Any]:
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


def lookup_events(trail: CloudTrailBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised before it runs, as ``cloudtrail:LookupEvents`` on ``*`` (see cloudtrail/__init__.py)."""
    attributes = params.get("LookupAttributes", [])
    if len(attributes) > 1:
        raise errors.invalid_lookup_attributes("You cannot specify more than one lookup attribute.")
    start, end = params.get("StartTime"), params.get("EndTime")
    if start is not None and end is not None and start > end:
        raise errors.invalid_time_range()
    fingerprint = _fingerprint(params)
    attribute = _attribute(attributes[0]) if attributes else None
    before = decode_token(params["NextToken"], fingerprint) if params.get("NextToken") else None
    if params.get("EventCategory") == "insight":
        return {"Events": []}  # Khoa has no Insights events
    limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
    page = trail.store.events(
        ctx.account_id,
        ctx.region,
        attribute=attribute,
        start=start,
        end=end,
        before=before,
        limit=limit + 1,
    )
    rows = page.rows
    result: dict[str, Any] = {"Events": [_event(row) for row in rows[:limit]]}
    if len(rows) > limit:
        last = rows[limit - 1]
        result["NextToken"] = encode_token(last.event_time, last.seq, fingerprint)
    elif page.scanned_to is not None:  # the page read its budget of events: go on from there
        result["NextToken"] = encode_token(*page.scanned_to, fingerprint)
    return result


OPERATIONS = {"LookupEvents": lookup_events}
