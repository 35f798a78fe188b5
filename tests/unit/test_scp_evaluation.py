"""Service control policies in evaluation (khoa.access.evaluate.evaluate_scps and evaluate(scps=...)).

Hand-written cases for the rules (every level must allow, an explicit Deny denies, the root user is
governed too) and Hypothesis properties over the generated policies of test_policy_properties:
SCPs never widen access, and with SCPs that allow everything the decision is unchanged. Also the
directory: which SCPs govern an account (none for the management account, none until the policy type
is enabled), read from a real migrated database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khoa.access.directory import Directory
from khoa.access.evaluate import SCP, Request, evaluate, evaluate_scps
from khoa.access.policy import Policy
from khoa.auth.principal import Principal
from khoa.services.organizations.store import FULL_ACCESS_CONTENT, OrganizationStore, join
from khoa.storage import schema
from tests.support.handlers import database
from tests.support.policy_strategies import A, documents
from tests.unit.test_policy_properties import _decide, policy_sets, requests

ROOT = Principal.account_root(A)
KEY = f"arn:aws:kms:us-east-1:{A}:key/k1"


def scp(*statements: dict[str, Any]) -> Policy:
    return Policy.parse({"Version": "2012-10-17", "Statement": list(statements)}, "identity")


FULL = scp({"Effect": "Allow", "Action": "*", "Resource": "*"})
DENY_DELETION = scp(
    {"Sid": "NoDeletion", "Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}
)
ONLY_KMS = scp({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})


def request(action: str, principal: Principal = ROOT) -> Request:
    return Request(principal=principal, action=action, resource=KEY, resource_account=A)


def test_an_explicit_deny_in_an_scp_stops_the_root_user() -> None:
    decision = evaluate(
        request("kms:ScheduleKeyDeletion"), identity=[], scps=((FULL,), (FULL, DENY_DELETION))
    )
    assert not decision.allowed and decision.explicit_deny
    assert decision.policy_kind == SCP and decision.deciding_sid == "NoDeletion"
    assert decision.explain("kms:ScheduleKeyDeletion") == "with an explicit deny in a service control policy"
    assert evaluate(request("kms:DisableKey"), identity=[], scps=((FULL,), (FULL, DENY_DELETION))).allowed


def test_every_level_must_allow() -> None:
    # the account allows only KMS: secrets are implicitly denied even though the root level allows all
    levels = ((FULL,), (ONLY_KMS,))
    assert evaluate_scps(request("kms:Decrypt"), levels).allowed
    denied = evaluate_scps(request("secretsmanager:GetSecretValue"), levels)
    assert not denied.allowed and not denied.explicit_deny and denied.policy_kind == SCP
    assert "because no service control policy allows" in denied.explain("secretsmanager:GetSecretValue")
    # a level with nothing attached allows nothing
    assert not evaluate_scps(request("kms:Decrypt"), ((FULL,), ())).allowed


def test_scps_never_grant() -> None:
    user = Principal(A, f"arn:aws:iam::{A}:user/u", "AIDAU", "IAMUser", name="u", principal_id="AIDAU")
    decision = evaluate(request("kms:Decrypt", user), identity=[], scps=((FULL,), (FULL,)))
    assert not decision.allowed and decision.policy_kind == "identity-based"


def test_no_levels_means_no_scp_applies() -> None:
    assert evaluate(request("kms:ScheduleKeyDeletion"), identity=[], scps=()).allowed


@st.composite
def scp_levels(draw: st.DrawFn) -> tuple[tuple[Policy, ...], ...]:
    return tuple(
        tuple(
            Policy.parse(d, "identity")
            for d in draw(st.lists(documents(resource_policy=False), min_size=0, max_size=1))
        )
        for _ in range(2)
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(), raw=policy_sets(), levels=scp_levels())
def test_scps_never_widen_access(
    req: Request, raw: dict[str, Any], levels: tuple[tuple[Policy, ...], ...]
) -> None:
    without = _decide(req, raw)
    with_scps = evaluate(
        req,
        identity=[Policy.parse(d, "identity") for d in raw["identity"]],
        resource=None if raw["resource"] is None else Policy.parse(raw["resource"], "resource"),
        boundary=None if raw["boundary"] is None else Policy.parse(raw["boundary"], "boundary"),
        session=[Policy.parse(d, "session") for d in raw["session"]],
        key_policy=raw["key_policy"],
        scps=levels,
    ).allowed
    assert not (with_scps and not without)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(), raw=policy_sets())
def test_full_access_scps_change_nothing(req: Request, raw: dict[str, Any]) -> None:
    without = _decide(req, raw)
    with_full = evaluate(
        req,
        identity=[Policy.parse(d, "identity") for d in raw["identity"]],
        resource=None if raw["resource"] is None else Policy.parse(raw["resource"], "resource"),
        boundary=None if raw["boundary"] is None else Policy.parse(raw["boundary"], "boundary"),
        session=[Policy.parse(d, "session") for d in raw["session"]],
        key_policy=raw["key_policy"],
        scps=((FULL,), (FULL,)),
    ).allowed
    assert with_full == without


def test_the_directory_loads_scps_for_members_only(tmp_path: Path) -> None:
    engine = database(tmp_path)
    store = OrganizationStore(engine)
    management, member = "111111111111", "222222222222"
    org = store.create_organization(management, "ALL", 1.0)
    assert org is not None
    with engine.begin() as conn:
        join(conn, org.org_id, member, "CREATED", 2.0)
    directory = Directory(engine, cache_seconds=0)
    assert directory.scps_for(member) == ()  # the policy type is not enabled yet
    store.set_scp_enabled(org.org_id, True)
    deny = json.dumps({"Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]})
    policy_id = store.create_policy(
        org.org_id,
        {"name": "d", "description": "", "policy_type": "SERVICE_CONTROL_POLICY", "content": deny},
        3.0,
    )
    store.attach(org.org_id, policy_id, member)
    root_level, account_level = directory.scps_for(member)
    assert len(root_level) == 1 and len(account_level) == 2
    assert root_level[0].statements[0].effect == "Allow"
    assert FULL_ACCESS_CONTENT  # the AWS-managed policy every target starts with
    assert directory.scps_for(management) == ()  # the management account is never governed
    assert directory.scps_for("333333333333") == ()  # not a member
    # a stored SCP that no longer parses denies (fail closed)
    with engine.begin() as conn:
        conn.execute(
            schema.org_policies.update()
            .where(schema.org_policies.c.policy_id == policy_id)
            .values(content="{")
        )
    levels = directory.scps_for(member)
    assert not evaluate_scps(request("sts:GetCallerIdentity", Principal.account_root(member)), levels).allowed


def test_the_directory_places_accounts_in_their_organization(tmp_path: Path) -> None:
    """aws:PrincipalOrgID/aws:ResourceOrgID and their paths: the organization's ID and ``o-…/r-…/`` for
    every account in it (the management account too); None outside one; cached, emptied by clear()."""
    engine = database(tmp_path)
    store = OrganizationStore(engine)
    management, member, outsider = "111111111111", "222222222222", "333333333333"
    directory = Directory(engine, cache_seconds=60)
    assert directory.organization_of(member) is None
    org = store.create_organization(management, "ALL", 1.0)
    assert org is not None
    with engine.begin() as conn:
        join(conn, org.org_id, member, "CREATED", 2.0)
    assert directory.organization_of(member) is None  # cached until the revocation epoch clears it
    directory.clear()
    place = (org.org_id, (f"{org.org_id}/{org.root_id}/",))
    assert directory.organization_of(member) == place
    assert directory.organization_of(management) == place
    assert directory.organization_of(outsider) is None
