"""The console's KMS pages over the wire: listing, details, the key life-cycle actions, refusals by
policy and by bad input, and the trail's record of an action made through the console."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.console import ConsoleClient
from tests.support.identity import Caller, eventually, new_user
from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer, fresh_region


@pytest.fixture(scope="module")
def region() -> str:
    """A region of the module's own on the shared server: its keys are the module's, on one page."""
    return fresh_region()


@pytest.fixture(scope="module")
def console(server: KhoaServer, region: str) -> ConsoleClient:
    """The account root, signed in once for the module."""
    client = ConsoleClient(server.endpoint)
    assert client.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY, region=region).status == 200
    return client


@pytest.fixture(scope="module")
def kms(server: KhoaServer, region: str) -> Any:
    return server.client("kms", region)


@pytest.fixture(scope="module")
def key(kms: Any) -> dict[str, str]:
    """A key with an alias, a tag and a grant, shared by the module's tests (each restores its state)."""
    description = unique("console-key")
    key_id = kms.create_key(Description=description, Tags=[{"TagKey": "team", "TagValue": "blue"}])[
        "KeyMetadata"
    ]["KeyId"]
    alias = "alias/" + unique("console")
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    grant = kms.create_grant(
        KeyId=key_id,
        GranteePrincipal="arn:aws:iam::111122223333:root",
        Operations=["Encrypt", "Decrypt"],
        Name="console-grant",
    )["GrantId"]
    return {"id": key_id, "alias": alias, "description": description, "grant": grant}


def _state(kms: Any, key_id: str) -> dict[str, Any]:
    return dict(kms.describe_key(KeyId=key_id)["KeyMetadata"])


def test_list_and_details(console: ConsoleClient, kms: Any, key: dict[str, str]) -> None:
    page = console.get("/console/kms")
    assert page.status == 200, page.plain
    assert page.headers.get("cache-control") == "no-store"
    assert key["id"] in page.text and key["alias"] in page.text and key["description"] in page.text
    assert f'href="/console/kms/keys/{key["id"]}"' in page.text
    assert console.get("/console/kms", {"next": "not-a-marker"}).status == 400

    details = console.get(f"/console/kms/keys/{key['id']}")
    assert details.status == 200, details.plain
    text = details.plain
    for expected in (key["alias"], key["description"], key["grant"], "console-grant", "team", "blue"):
        assert expected in text
    assert "Automatic rotation disabled" in text
    assert '"Version": "2012-10-17"' in details.text.replace("&#34;", '"')
    assert "Enable automatic rotation" in text

    # Rotation on and off again through the console (disabling needs the confirmation).
    assert console.post(f"/console/kms/keys/{key['id']}/rotation/enable", {}).status == 200
    assert kms.get_key_rotation_status(KeyId=key["id"])["KeyRotationEnabled"] is True
    assert "Automatic rotation enabled." in console.last.plain  # type: ignore[union-attr]
    page = console.post(f"/console/kms/keys/{key['id']}/rotation/disable", {"confirm": "yes"})
    assert page.status == 200
    assert kms.get_key_rotation_status(KeyId=key["id"])["KeyRotationEnabled"] is False

    assert console.get("/console/kms/keys/not-a-key").status in (400, 404)

    # Creating a symmetric key from the console.
    assert console.get("/console/kms/create").status == 200
    description = unique("made-in-console")
    page = console.post("/console/kms/create", {"description": description})
    assert page.status == 200 and "Key created." in page.plain and description in page.plain
    made = page.url.rsplit("/", 1)[1]
    meta = _state(kms, made)
    assert meta["Description"] == description and meta["KeySpec"] == "SYMMETRIC_DEFAULT"


def test_disable_enable_and_deletion(
    console: ConsoleClient, server: KhoaServer, region: str, kms: Any, key: dict[str, str]
) -> None:
    url = f"/console/kms/keys/{key['id']}"
    console.get(url)
    # A destructive action without its confirmation is refused, and nothing changes.
    assert console.post(url + "/disable", {}).status == 400
    assert _state(kms, key["id"])["KeyState"] == "Enabled"

    console.get(url)
    page = console.post(url + "/disable", {"confirm": "yes"})
    assert page.status == 200 and "Key disabled" in page.plain
    assert _state(kms, key["id"])["KeyState"] == "Disabled"
    page = console.post(url + "/enable", {})
    assert page.status == 200 and "Key enabled." in page.plain
    assert _state(kms, key["id"])["KeyState"] == "Enabled"

    # The waiting period must be a whole number; the range is the API's to check.
    assert (
        console.post(url + "/schedule-deletion", {"confirm": "yes", "pending_window_days": "x"}).status == 400
    )
    console.get(url)
    refused = console.post(url + "/schedule-deletion", {"confirm": "yes", "pending_window_days": "3"})
    assert refused.status == 400 and "ValidationException" in refused.plain
    console.get(url)
    assert console.post(url + "/schedule-deletion", {"pending_window_days": "7"}).status == 400
    assert _state(kms, key["id"])["KeyState"] == "Enabled"

    console.get(url)
    page = console.post(url + "/schedule-deletion", {"confirm": "yes", "pending_window_days": "7"})
    assert page.status == 200, page.plain
    meta = _state(kms, key["id"])
    assert meta["KeyState"] == "PendingDeletion" and meta["PendingDeletionWindowInDays"] == 7
    assert meta["DeletionDate"].strftime("%Y-%m-%d %H:%M:%S UTC") in page.plain
    assert "in 6 days" in page.plain or "in 7 days" in page.plain
    assert "Cancel deletion" in page.plain
    listing = console.get("/console/kms")
    assert listing.status == 200 and "PendingDeletion deletion on" in listing.plain

    # The trail records the console's action with its user agent.
    cloudtrail = server.client("cloudtrail", region)

    def recorded() -> bool:
        events = cloudtrail.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ScheduleKeyDeletion"}],
            MaxResults=50,
        )["Events"]
        records = [json.loads(e["CloudTrailEvent"]) for e in events]
        return any(key["id"] in json.dumps(r) and "khoa-console" in r.get("userAgent", "") for r in records)

    eventually(recorded)

    page = console.post(url + "/cancel-deletion", {})
    assert page.status == 200 and "Deletion cancelled" in page.plain
    assert _state(kms, key["id"])["KeyState"] == "Disabled"
    console.post(url + "/enable", {})
    assert _state(kms, key["id"])["KeyState"] == "Enabled"


@pytest.fixture(scope="module")
def reader(server: KhoaServer) -> Caller:
    return new_user(
        server,
        server.client("iam"),
        {
            "Effect": "Allow",
            "Action": ["kms:DescribeKey", "kms:ListKeys", "kms:ListAliases"],
            "Resource": "*",
        },
    )


def test_denied_action_and_sections(
    server: KhoaServer, region: str, kms: Any, key: dict[str, str], reader: Caller
) -> None:
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(reader.access_key_id, reader.secret_access_key, region=region).status == 200
    listing = console.get("/console/kms")
    assert listing.status == 200 and key["id"] in listing.text and key["alias"] in listing.text
    url = f"/console/kms/keys/{key['id']}"
    page = console.get(url)
    assert page.status == 200, page.plain
    assert key["alias"] in page.plain
    assert page.plain.count("Not authorised to see this") >= 3  # grants, policy, tags (and rotation)
    refused = console.post(url + "/schedule-deletion", {"confirm": "yes", "pending_window_days": "7"})
    assert refused.status == 403, refused.plain
    assert "AccessDenied" in refused.plain and "kms:ScheduleKeyDeletion" in refused.plain
    assert _state(kms, key["id"])["KeyState"] == "Enabled"
