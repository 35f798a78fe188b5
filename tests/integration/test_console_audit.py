"""The console's audit trail pages over the wire: looking events up with a filter, reading one event's
full record, and refusals by bad input (400) and by policy (403)."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest

from tests.support.console import ConsoleClient
from tests.support.identity import new_user
from tests.support.server import KhoaServer

_EVENT_LINK = re.compile(r'href="(/console/audit/event\?id=[^"]+)"')


@pytest.fixture(scope="module")
def marker(server: KhoaServer) -> str:
    """A failed DeleteParameter of a unique name: an event easy to find, with an error code."""
    name = f"/audit-{uuid.uuid4().hex[:12]}"
    ssm = server.client("ssm")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.delete_parameter(Name=name)
    return name


def test_filter_by_event_name_and_read_the_event(console: ConsoleClient, marker: str) -> None:
    page = console.get("/console/audit", {"attribute": "EventName", "value": "DeleteParameter"})
    assert page.status == 200, page.plain
    rows = re.findall(r"<tr>(.*?)</tr>", page.text, re.S)[1:]
    assert rows
    for row in rows:
        assert "DeleteParameter" in row
    assert "ParameterNotFound" in page.plain
    assert 'value="DeleteParameter"' in page.text and 'option value="EventName" selected' in page.text

    links = _EVENT_LINK.findall(page.text)
    record = None
    for link in links:
        candidate = console.get(html.unescape(link))
        if marker in candidate.plain:
            record = candidate
            break
    assert record is not None, "the marker event is listed"
    assert record.status == 200
    assert 'id="event-record"' in record.text
    assert '"eventName": "DeleteParameter"' in html.unescape(record.text)
    assert "arn:aws:iam::111122223333:root" in record.plain
    assert "ParameterNotFound" in record.plain
    assert console.get("/console/audit/event", {"id": str(uuid.uuid4())}).status == 404


def test_pager_keeps_filters(console: ConsoleClient) -> None:
    query = {"attribute": "ReadOnly", "value": "true", "start": "2000-01-01T00:00", "per_page": "1"}
    page = console.get("/console/audit", query)
    assert page.status == 200, page.plain
    match = re.search(r'<a rel="next" href="([^"]+)"', page.text)
    assert match, "the sign-in and the lookups are read-only events: more than one"
    target = html.unescape(match.group(1))
    assert "attribute=ReadOnly" in target and "start=2000-01-01T00%3A00" in target and "per_page=1" in target
    second = console.get(target)
    assert second.status == 200 and "First page" in second.plain
    assert len(re.findall(r"<tr>", second.text)) == 2  # the header and one event
    assert console.get("/console/audit", {"per_page": "51"}).status == 400


def test_bad_input_and_refusal(console: ConsoleClient, server: KhoaServer) -> None:
    assert console.get("/console/audit", {"start": "yesterday"}).status == 400
    assert console.get("/console/audit", {"attribute": "Nope", "value": "x"}).status == 400
    assert console.get("/console/audit", {"attribute": "ReadOnly", "value": "maybe"}).status == 400
    reversed_range = {"start": "2026-01-02T00:00", "end": "2026-01-01T00:00"}
    assert console.get("/console/audit", reversed_range).status == 400

    nobody: Any = new_user(server, server.client("iam"))
    other = ConsoleClient(server.endpoint)
    assert other.sign_in(nobody.access_key_id, nobody.secret_access_key).status == 200
    refused = other.get("/console/audit")
    assert refused.status == 403 and "Not authorised" in refused.plain
    assert "cloudtrail:LookupEvents" in refused.plain
