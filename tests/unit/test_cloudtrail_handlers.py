"""CloudTrail's LookupEvents called as the pipeline calls it, without a server: ``build_service`` over
an audit trail written straight into a migrated SQLite database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from khoa.auth.principal import Principal
from khoa.protocol.errors import AWSError
from khoa.services.base import Service
from khoa.services.cloudtrail import build_service
from khoa.services.cloudtrail.backend import CloudTrailBackend
from khoa.services.cloudtrail.store import TrailStore
from khoa.storage import schema
from tests.support.handlers import ACCOUNT, OTHER_ACCOUNT, REGION, authorizer, context, database


def _event(
    seq: int, name: str, *, account: str = ACCOUNT, region: str = REGION, **columns: Any
) -> dict[str, Any]:
    resources = columns.pop("resources", [])
    return {
        "event_id": f"00000000-0000-4000-8000-{seq:012d}",
        "account_id": account,
        "region": region,
        "event_time": 1_700_000_000.0 + seq,
        "event_source": "kms.amazonaws.com",
        "event_name": name,
        "read_only": name.startswith(("Describe", "List", "Get")),
        "resource_names": "\n".join(r["ARN"] for r in resources) or None,
        "resource_types": "\n".join(r["type"] for r in resources) or None,
        "record": json.dumps({"eventName": name, "resources": resources}),
        "username": None,
        "access_key_id": None,
        **columns,
    }


KEY = {"ARN": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k1", "type": "AWS::KMS::Key"}


@pytest.fixture
def trail(tmp_path: Path) -> Service:
    engine = database(tmp_path)
    rows = [
        _event(1, "CreateKey", resources=[KEY], username="alice", access_key_id="AKIAALICE"),
        _event(2, "DescribeKey", resources=[KEY]),
        _event(3, "ListKeys"),
        _event(4, "CreateKey", region="eu-west-1"),
        _event(5, "CreateKey", account=OTHER_ACCOUNT),
        _event(6, "ScheduleKeyDeletion", resources=[KEY], username="bob"),
    ]
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows)
    return build_service(CloudTrailBackend(TrailStore(engine), authorizer(engine)))


def lookup(service: Service, **params: Any) -> dict[str, Any]:
    return service.handlers["LookupEvents"](context("cloudtrail", "LookupEvents"), params)


def names(result: dict[str, Any]) -> list[str]:
    return [e["EventName"] for e in result["Events"]]


def error(service: Service, **params: Any) -> str:
    with pytest.raises(AWSError) as excinfo:
        lookup(service, **params)
    return excinfo.value.code


def test_the_accounts_events_in_the_region_newest_first(trail: Service) -> None:
    result = lookup(trail)
    assert names(result) == ["ScheduleKeyDeletion", "ListKeys", "DescribeKey", "CreateKey"]
    created = result["Events"][-1]
    assert created["Username"] == "alice" and created["AccessKeyId"] == "AKIAALICE"
    assert created["Resources"] == [{"ResourceType": "AWS::KMS::Key", "ResourceName": KEY["ARN"]}]
    assert created["EventTime"] == datetime.fromtimestamp(1_700_000_001, UTC)
    assert json.loads(created["CloudTrailEvent"])["eventName"] == "CreateKey"


def test_lookup_attributes(trail: Service) -> None:
    def by(key: str, value: str) -> list[str]:
        return names(lookup(trail, LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}]))

    assert by("EventName", "CreateKey") == ["CreateKey"]
    assert by("ResourceName", KEY["ARN"]) == ["ScheduleKeyDeletion", "DescribeKey", "CreateKey"]
    assert by("ResourceType", "AWS::KMS::Key") == ["ScheduleKeyDeletion", "DescribeKey", "CreateKey"]
    assert by("ReadOnly", "true") == ["ListKeys", "DescribeKey"]
    assert by("Username", "bob") == ["ScheduleKeyDeletion"]


def test_time_range(trail: Service) -> None:
    start = datetime.fromtimestamp(1_700_000_002, UTC)
    end = datetime.fromtimestamp(1_700_000_003, UTC)
    assert names(lookup(trail, StartTime=start, EndTime=end)) == ["ListKeys", "DescribeKey"]
    assert error(trail, StartTime=end, EndTime=start) == "InvalidTimeRangeException"


def test_paging_and_tokens(trail: Service) -> None:
    first = lookup(trail, MaxResults=3)
    assert names(first) == ["ScheduleKeyDeletion", "ListKeys", "DescribeKey"]
    second = lookup(trail, MaxResults=3, NextToken=first["NextToken"])
    assert names(second) == ["CreateKey"] and "NextToken" not in second
    # A token belongs to the filters of the call that returned it.
    other = [{"AttributeKey": "EventName", "AttributeValue": "CreateKey"}]
    assert error(trail, NextToken=first["NextToken"], LookupAttributes=other) == "InvalidNextTokenException"
    assert error(trail, NextToken="garbage") == "InvalidNextTokenException"


def test_bad_lookups(trail: Service) -> None:
    two = [
        {"AttributeKey": "EventName", "AttributeValue": "CreateKey"},
        {"AttributeKey": "Username", "AttributeValue": "bob"},
    ]
    assert error(trail, LookupAttributes=two) == "InvalidLookupAttributesException"
    read_only = [{"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}]
    assert error(trail, LookupAttributes=read_only) == "InvalidLookupAttributesException"
    assert lookup(trail, EventCategory="insight") == {"Events": []}


def test_lookup_events_is_authorised_on_everything(trail: Service) -> None:
    nobody = Principal(
        account_id=ACCOUNT,
        arn=f"arn:aws:iam::{ACCOUNT}:user/nobody",
        user_id="AIDANOBODY",
        kind="IAMUser",
        name="nobody",
        principal_id="AIDANOBODY",
    )
    with pytest.raises(AWSError) as excinfo:
        trail.authorizer(context("cloudtrail", "LookupEvents", principal=nobody), {})
    assert excinfo.value.code == "AccessDeniedException"
    trail.authorizer(context("cloudtrail", "LookupEvents"), {})  # the account root may
