"""khoa-ops ListAlerts and GetReviewFindings through boto3 against the shared server: the root sees its
account's alerts and findings, an IAM user needs ``khoa:ListAlerts`` / ``khoa:GetReviewFindings``,
another account sees none of them (nor the installation-wide findings), paging and filters, and every
call is in the trail."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest
from botocore.config import Config

from khoa.client.leaks import add_models
from khoa.services.ops import paging
from tests.integration.test_cloudtrail import lookup
from tests.support.errors import expect_error
from tests.support.identity import Caller, new_user
from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

INSTALLATION_RULES = {"audit-trail-unverified", "alerts-not-routed"}


def ops_client(server: KhoaServer, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> Any:
    """A ``khoa-ops`` client, built as khoa.client.leaks.leaks_client builds khoa-leaks'."""
    session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    add_models(session)
    return session.client(
        "khoa-ops",
        endpoint_url=server.endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}),
    )


def raise_alert(server: KhoaServer) -> str:
    """Schedule a key's deletion and run the alert engine: a ``key-deletion-scheduled`` alert naming
    the key. Returns the key's ARN."""
    server.run_jobs()  # the engine's first pass ever puts its cursor at the trail's end
    kms = server.client("kms")
    arn = kms.create_key(Description=unique("ops-alert"))["KeyMetadata"]["Arn"]
    kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
    server.run_jobs()
    return str(arn)


def alerts_naming(client: Any, arn: str, **filters: Any) -> list[dict[str, Any]]:
    """The alerts naming ``arn`` among the newest few pages."""
    found, token = [], None
    for _ in range(5):
        page = client.list_alerts(MaxResults=100, **filters, **({"NextToken": token} if token else {}))
        found += [a for a in page["Alerts"] if arn in json.dumps(a["Resources"]) or arn in a["Summary"]]
        token = page.get("NextToken")
        if not token:
            break
    return found


@pytest.fixture(scope="module")
def key_arn(server: KhoaServer) -> str:
    return raise_alert(server)


def test_root_lists_its_alerts_with_filters_and_paging(server: KhoaServer, key_arn: str) -> None:
    ops = ops_client(server)
    [alert] = alerts_naming(ops, key_arn)
    assert alert["Rule"] == "key-deletion-scheduled"
    assert alert["Severity"] in ("medium", "high")
    assert alert["AccountId"] == key_arn.split(":")[4]
    assert alert["Region"] == REGION
    assert json.loads(alert["Details"])["keyArn"] == key_arn
    assert alert["RaisedAt"].tzinfo is not None
    assert alerts_naming(ops, key_arn, Rule="key-deletion-scheduled") == [alert]
    assert alerts_naming(ops, key_arn, MinimumSeverity="critical") == []
    # one per page: the token walks on, newest first, without repeating
    first = ops.list_alerts(MaxResults=1)
    assert len(first["Alerts"]) == 1
    if "NextToken" in first:
        second = ops.list_alerts(MaxResults=1, NextToken=first["NextToken"])
        assert second["Alerts"][0]["AlertId"] != first["Alerts"][0]["AlertId"]
        assert second["Alerts"][0]["RaisedAt"] <= first["Alerts"][0]["RaisedAt"]
        # a token is only good with the filters it was given with
        expect_error(
            "InvalidNextTokenException", ops.list_alerts, MaxResults=1, Rule="x", NextToken=first["NextToken"]
        )
    expect_error("InvalidNextTokenException", ops.list_alerts, NextToken="not-a-token")


def test_root_gets_review_findings(server: KhoaServer) -> None:
    ops = ops_client(server)
    sm = server.client("secretsmanager")
    name = unique("BadlyNamed")  # outside the default naming pattern (<env>/<app>/<kind>/<name>)
    arn = sm.create_secret(Name=name, SecretString="x")["ARN"]
    review = ops.get_review_findings()
    assert set(review["SeverityCounts"]) == {"High", "Medium", "Low"}
    everything: list[dict[str, Any]] = list(review["Findings"])
    token = review.get("NextToken")
    while token:
        page = ops.get_review_findings(NextToken=token)
        everything += page["Findings"]
        token = page.get("NextToken")
    assert len(everything) == sum(review["SeverityCounts"].values())
    assert any(f["Resource"] == arn for f in everything)
    ranks = {"high": 3, "medium": 2, "low": 1}
    assert [ranks[f["Severity"]] for f in everything] == sorted(
        (ranks[f["Severity"]] for f in everything), reverse=True
    )
    # the installation-wide rules are the installation's first account's
    assert {f["Rule"] for f in everything} | set(review["PassedRules"]) >= INSTALLATION_RULES
    high = ops.get_review_findings(MinimumSeverity="high", MaxResults=100)
    assert {f["Severity"] for f in high["Findings"]} <= {"high"}


def test_review_pages_come_from_the_review_their_token_names(server: KhoaServer) -> None:
    ops = ops_client(server)
    sm = server.client("secretsmanager")
    arn = sm.create_secret(Name=unique("BadlyNamed"), SecretString="x")["ARN"]
    first = ops.get_review_findings(MaxResults=1)
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)  # fixed after the review ran
    pages, token = [first], first.get("NextToken")
    while token:
        pages.append(ops.get_review_findings(MaxResults=50, NextToken=token))
        token = pages[-1].get("NextToken")
    assert len(pages) > 1 and {page["ReviewedAt"] for page in pages} == {first["ReviewedAt"]}
    paged = [f for page in pages for f in page["Findings"]]
    assert any(f["Resource"] == arn for f in paged)  # the review as it ran, not re-run per page
    assert len(paged) == sum(first["SeverityCounts"].values())

    fresh = ops.get_review_findings(MaxResults=100)  # no token: the rules run again
    assert fresh["ReviewedAt"] >= first["ReviewedAt"]
    everything, token = list(fresh["Findings"]), fresh.get("NextToken")
    while token:
        page = ops.get_review_findings(MaxResults=100, NextToken=token)
        everything += page["Findings"]
        token = page.get("NextToken")
    assert not any(f["Resource"] == arn for f in everything)

    for position in (5, [-1, 1.0], [1, "later"], [1, float("nan")], [True, 1.0], [1, 2, 3]):
        forged = base64.urlsafe_b64encode(
            json.dumps([position, paging.fingerprint({"severity": "low"})]).encode()
        ).decode()
        expect_error("InvalidNextTokenException", ops.get_review_findings, NextToken=forged)


def test_users_need_the_grant_and_other_accounts_see_nothing(
    server: KhoaServer, iam: Any, key_arn: str, account_b: Caller
) -> None:
    plain = new_user(server, iam, {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"})
    denied = ops_client(server, plain.access_key_id, plain.secret_access_key)
    error = expect_error("AccessDeniedException", denied.list_alerts)
    assert (
        f"User: {plain.arn} is not authorized to perform: khoa:ListAlerts on resource: *" in error["Message"]
    )
    expect_error("AccessDeniedException", denied.get_review_findings)

    allowed = new_user(server, iam, {"Effect": "Allow", "Action": "khoa:ListAlerts", "Resource": "*"})
    granted = ops_client(server, allowed.access_key_id, allowed.secret_access_key)
    assert len(alerts_naming(granted, key_arn)) == 1
    expect_error("AccessDeniedException", granted.get_review_findings)

    other = ops_client(server, account_b.access_key_id, account_b.secret_access_key)
    assert alerts_naming(other, key_arn) == []
    assert all(a["AccountId"] == account_b.account_id for a in other.list_alerts()["Alerts"])
    review = other.get_review_findings(MaxResults=100)
    assert all(f["Resource"].split(":")[4] == account_b.account_id for f in review["Findings"])
    assert not INSTALLATION_RULES & set(review["PassedRules"])


def test_calls_are_in_the_trail(server: KhoaServer) -> None:
    ops = ops_client(server)
    request_id = ops.list_alerts(MaxResults=1)["ResponseMetadata"]["RequestId"]
    trail = server.client("cloudtrail")
    [event] = [e for e in lookup(trail, "EventName", "ListAlerts") if request_id in e["CloudTrailEvent"]]
    record = json.loads(event["CloudTrailEvent"])
    assert record["eventSource"] == "khoa-ops.amazonaws.com"
    assert record["requestParameters"] == {"maxResults": 1}
    assert record["readOnly"] is True
