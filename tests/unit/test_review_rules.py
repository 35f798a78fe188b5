"""Rule logic of ``khoa review`` on hand-made snapshots (the integration test drives the real thing):
the policy judgements and schedule arithmetic with the cases the live test does not build."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from khoa.review import rules
from khoa.review.model import Finding, Severity
from khoa.review.render import as_markdown
from khoa.review.runner import Review
from khoa.review.snapshot import Snapshot

ACCOUNT = "111122223333"
OTHER = "444455556666"
SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:dev/app/db/x-AbCdEf"


def _snapshot(**parts: Any) -> Snapshot:
    defaults: dict[str, Any] = {"secrets": [], "keys": [], "grants": [], "now": time.time()}
    return cast(Snapshot, SimpleNamespace(**{**defaults, **parts}))


def _secret(policy: dict[str, Any] | None = None, **fields: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "secret_id": "s1",
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "name": "dev/app/db/x",
        "arn": SECRET_ARN,
        "resource_policy": json.dumps({"default": json.dumps(policy)}) if policy else None,
        "rotation_enabled": False,
        "rotation_rules": None,
        "last_rotated_at": None,
    }
    return SimpleNamespace(**{**values, **fields})


def _policy(**statement: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", **statement}]}


@pytest.mark.parametrize(
    ("statement", "external"),
    [
        ({"Principal": "*", "Action": "secretsmanager:GetSecretValue"}, True),
        (
            {
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}},
            },
            False,
        ),
        (
            {
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Condition": {"StringNotEquals": {"aws:PrincipalAccount": OTHER}},
            },
            True,
        ),
        ({"NotPrincipal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "secretsmanager:*"}, True),
        ({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "secretsmanager:*"}, False),
        ({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"}, "Action": "secretsmanager:*"}, False),
        ({"Principal": {"AWS": OTHER}, "Action": "secretsmanager:GetSecretValue"}, True),
        ({"Principal": {"AWS": f"arn:aws:iam::{OTHER}:role/app"}, "Action": "secretsmanager:*"}, True),
        ({"Principal": {"Service": "lambda.amazonaws.com"}, "Action": "secretsmanager:*"}, False),
        (
            {
                "Principal": {"AWS": "*"},
                "Action": "kms:Decrypt",
                "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}},
            },
            False,
        ),
        (
            {
                "Principal": {"AWS": "*"},
                "Action": "kms:Decrypt",
                "Condition": {"StringEquals": {"kms:CallerAccount": OTHER}},
            },
            True,
        ),
    ],
)
def test_external_access_of_a_secret_policy(statement: dict[str, Any], external: bool) -> None:
    found = list(rules.external_access(_snapshot(secrets=[_secret(_policy(**statement))])))
    assert [resource for resource, _ in found] == ([SECRET_ARN] if external else [])


@pytest.mark.parametrize(
    ("statement", "permissive"),
    [
        ({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "secretsmanager:*"}, False),
        ({"Principal": {"AWS": ACCOUNT}, "Action": "*"}, False),
        ({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"}, "Action": "secretsmanager:*"}, True),
        (
            {
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"},
                "Action": "secretsmanager:GetSecretValue",
            },
            False,
        ),
        ({"Principal": "*", "Action": "secretsmanager:GetSecretValue"}, True),
        (
            {
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}},
            },
            False,
        ),
    ],
)
def test_overly_permissive_resource_policies(statement: dict[str, Any], permissive: bool) -> None:
    snapshot = _snapshot(secrets=[_secret(_policy(**statement))])
    # no IAM principals in this snapshot
    snapshot.principals = {}  # type: ignore[misc]
    snapshot.group_members = {}  # type: ignore[misc]
    snapshot.inline_policies = []  # type: ignore[misc]
    found = list(rules.overly_permissive_policy(snapshot))
    assert [resource for resource, _ in found] == ([SECRET_ARN] if permissive else [])


@pytest.mark.parametrize(
    ("resource", "action", "covered"),
    [
        ("*", "kms:*", True),
        ("arn:aws:kms:*:*:key/*", "kms:*", True),
        ("arn:aws:secretsmanager:*:*:secret:prod/*", "kms:*", False),
        ("arn:aws:s3:::bucket/*", "*", False),
    ],
)
def test_identity_wildcards_count_only_on_secrets_and_keys(resource: str, action: str, covered: bool) -> None:
    user = SimpleNamespace(principal_id="u1", kind="user", name="u", arn=f"arn:aws:iam::{ACCOUNT}:user/u")
    document = json.dumps(_policy(Action=action, Resource=resource))
    snapshot = _snapshot()
    snapshot.principals = {"u1": user}  # type: ignore[misc]
    snapshot.group_members = {}  # type: ignore[misc]
    snapshot.inline_policies = [(user, "p", document)]  # type: ignore[misc]
    snapshot.attachments = {}  # type: ignore[misc]
    found = [r for r, _ in rules.overly_permissive_policy(snapshot)]
    assert found == ([user.arn] if covered else [])


@pytest.mark.parametrize(("days_ago", "every", "overdue"), [(3, 1, True), (3, 30, False), (40, 30, True)])
def test_rotation_overdue_follows_the_schedule_and_window(days_ago: int, every: int, overdue: bool) -> None:
    now = time.time()
    secret = _secret(
        rotation_enabled=True,
        rotation_rules=json.dumps({"AutomaticallyAfterDays": every}),
        last_rotated_at=now - days_ago * 86400,
    )
    found = list(rules.rotation_overdue(_snapshot(secrets=[secret], now=now)))
    assert bool(found) is overdue


def test_severities_order_and_every_rule_explains_its_own() -> None:
    assert Severity.LOW < Severity.MEDIUM < Severity.HIGH
    assert Severity.parse("Medium") is Severity.MEDIUM
    ids = [rule.id for rule in rules.RULES]
    assert len(ids) == len(set(ids)) == 13
    assert all(rule.why and rule.fix and "\n" not in rule.fix for rule in rules.RULES)


def test_markdown_escapes_table_cells() -> None:
    finding = Finding("naming-convention", Severity.LOW, "arn:x", "name 'a|b' breaks it", "rename")
    text = as_markdown(Review([finding], [], rules.RULES))
    row = next(line for line in text.splitlines() if line.startswith("| low"))
    assert "a\\|b" in row and row.count(" | ") == 4
