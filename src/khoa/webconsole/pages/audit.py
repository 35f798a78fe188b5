"""Console pages for the audit trail: looking events up (one lookup attribute, a time range, one API
page at a time) and reading one event's full record.

Both go through CloudTrail's LookupEvents as the signed-in principal, so who may read the trail is
decided by ``cloudtrail:LookupEvents`` like any other call. The filters stay in the query string, so a
"Next page" link keeps them (LookupEvents only accepts a token with the filters that made it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from khoa.webconsole.http import BadRequest, Page, Request, Route, page_arguments, page_size

PAGE_SIZE = 50  # LookupEvents' largest page
ATTRIBUTES = (
    "EventName",
    "Username",
    "ResourceName",
    "ResourceType",
    "EventSource",
    "EventId",
    "AccessKeyId",
    "ReadOnly",
)
_TIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_time(raw: str, label: str) -> datetime | None:
    """A ``datetime-local`` input's value, read as UTC (None when empty); anything else is a 400."""
    raw = raw.strip()
    if not raw:
        return None
    for layout in _TIME_FORMATS:
        try:
            return datetime.strptime(raw, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise BadRequest(f"The {label} time must look like 2026-12-06T11:00 (UTC).")


def _record(event: dict[str, Any]) -> dict[str, Any]:
    """The event's CloudTrailEvent JSON, parsed ({} when it is not JSON)."""
    try:
        record = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def events(request: Request) -> Page:
    attribute = request.arg("attribute", "EventName")
    value = request.arg("value").strip()
    if attribute not in ATTRIBUTES:
        raise BadRequest("Choose one of the lookup attributes offered.")
    start_raw, end_raw = request.arg("start"), request.arg("end")
    start = parse_time(start_raw, "start")
    end = parse_time(end_raw, "end")
    per_page = page_size(request, PAGE_SIZE)
    next_token = request.arg("next")
    arguments = page_arguments(per_page, next_token)
    if value:
        arguments["LookupAttributes"] = [{"AttributeKey": attribute, "AttributeValue": value}]
    if start is not None:
        arguments["StartTime"] = start
    if end is not None:
        arguments["EndTime"] = end
    answer = request.client_api.client("cloudtrail").lookup_events(**arguments)
    rows = []
    for event in answer.get("Events", []):
        record = _record(event)
        rows.append(
            {
                "event": event,
                "error_code": record.get("errorCode", ""),
                "resources": [r.get("ResourceName") or "" for r in event.get("Resources") or []],
            }
        )
    query = {"attribute": attribute, "value": value, "start": start_raw.strip(), "end": end_raw.strip()}
    if per_page != PAGE_SIZE:
        query["per_page"] = str(per_page)
    return Page(
        "audit/events.html",
        {
            "title": "Audit trail",
            "attributes": ATTRIBUTES,
            "attribute": attribute,
            "value": value,
            "start": query["start"],
            "end": query["end"],
            "rows": rows,
            "next_token": answer.get("NextToken"),
            "first": not next_token,
            "base": "/console/audit?" + urlencode(query),
        },
    )


def event(request: Request) -> Page:
    event_id = request.arg("id").strip()
    if not event_id:
        raise BadRequest("Give an event ID.")
    found = (
        request.client_api.client("cloudtrail")
        .lookup_events(
            LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": event_id}], MaxResults=1
        )
        .get("Events", [])
    )
    if not found:
        return Page(
            "error.html",
            {
                "title": "Event not found",
                "message": "There is no such event in this Region's trail.",
                "code": "",
            },
            status=404,
        )
    record = _record(found[0])
    identity = record.get("userIdentity") or {}
    return Page(
        "audit/event.html",
        {
            "title": f"Event {found[0].get('EventName', '')}",
            "event": found[0],
            "record": record,
            "who": identity.get("arn") or identity.get("principalId") or found[0].get("Username", ""),
            "raw": found[0].get("CloudTrailEvent", "{}"),
        },
    )


ROUTES = [
    Route("GET", "/console/audit", events),
    Route("GET", "/console/audit/event", event),
]
