"""Facts of role sessions (aws:TokenIssueTime, aws:ResourceAccount) and the memo of decisions: a
memoised decision never outlives a change of either; and the role-chain rules of khoa.services.sts.chain
(source identity and transitive tags carried over, AWS's errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

import khoa.access.authorize as authorize_module
from khoa.access.authorize import Authorizer, facts_of
from khoa.access.directory import CallerPolicies
from khoa.access.policy import Policy
from khoa.auth.principal import Principal
from khoa.protocol.errors import AWSError
from khoa.services.sts.chain import lineage

ACCOUNT = "111122223333"
OTHER = "444455556666"
CUTOFF = datetime(2030, 1, 1, tzinfo=UTC)
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-AbCdEf"
REQUEST = (int(CUTOFF.timestamp()), "us-east-1", True, "10.0.0.1", None, None, None)


def _session(**changes: Any) -> Principal:
    fields: dict[str, Any] = {
        "account_id": ACCOUNT,
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/app/s1",
        "user_id": "AROAAPP:s1",
        "kind": "AssumedRole",
        "name": "app",
        "principal_id": "AROAAPP",
        "session_name": "s1",
        "issued_at": CUTOFF.timestamp() - 60.5,
    }
    fields.update(changes)
    return Principal(**fields)


def _policy(*statements: dict[str, Any]) -> Policy:
    return Policy.parse({"Version": "2012-10-17", "Statement": list(statements)}, "identity")


class _Directory:
    def __init__(self, policies: CallerPolicies) -> None:
        self.policies = policies

    def for_principal(self, principal: Principal) -> CallerPolicies:
        return self.policies

    def clear(self) -> None:
        pass


def _ctx(principal: Principal) -> Any:
    return SimpleNamespace(
        principal=principal,
        region="us-east-1",
        service="secretsmanager",
        now=CUTOFF,
        source_ip="10.0.0.1",
        extras={},
        account_id=ACCOUNT,
    )


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = authorize_module.evaluate

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(authorize_module, "evaluate", counting)
    return count


def test_token_issue_time_is_a_fact_of_temporary_credentials_only() -> None:
    facts = facts_of(_session(), REQUEST, ACCOUNT)
    assert facts["aws:tokenissuetime"] == ["2029-12-31T23:58:59Z"]
    assert facts["aws:resourceaccount"] == [ACCOUNT]
    user = Principal(
        ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/u", "AIDAU", "IAMUser", name="u", principal_id="AIDAU"
    )
    assert "aws:tokenissuetime" not in facts_of(user, REQUEST, ACCOUNT)
    assert "aws:tokenissuetime" not in facts_of(Principal.account_root(ACCOUNT), REQUEST, ACCOUNT)
    assert "aws:resourceaccount" not in facts_of(user, REQUEST, None)


def test_a_memoised_decision_never_outlives_the_sessions_issue_time(evaluations: list[int]) -> None:
    revoke = _policy(
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2030-01-01T00:00:00Z"}},
        },
    )
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[revoke])))  # type: ignore[arg-type]
    old = _ctx(_session(issued_at=CUTOFF.timestamp() - 1))
    new = _ctx(_session(issued_at=CUTOFF.timestamp()))
    for _ in range(3):
        assert not authorizer.decide(old, "secretsmanager:GetSecretValue", SECRET).allowed
        assert authorizer.decide(new, "secretsmanager:GetSecretValue", SECRET).allowed
    assert evaluations[0] == 2


def test_a_memoised_decision_never_outlives_the_resources_account(evaluations: list[int]) -> None:
    perimeter = _policy(
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:ResourceAccount": ACCOUNT}},
        },
    )
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[perimeter])))  # type: ignore[arg-type]
    ctx = _ctx(_session())
    for _ in range(3):
        assert authorizer.decide(ctx, "secretsmanager:GetSecretValue", SECRET).allowed
        assert not authorizer.decide(
            ctx, "secretsmanager:GetSecretValue", SECRET, resource_account=OTHER
        ).allowed
    assert evaluations[0] == 2


ORG = ("o-exampleorg", ("o-exampleorg/r-ab12/",))


def test_organization_keys_are_facts_of_accounts_in_an_organization() -> None:
    facts = facts_of(_session(), REQUEST, OTHER, ORG, ("o-otherorg11", ("o-otherorg11/r-cd34/",)))
    assert facts["aws:principalorgid"] == ["o-exampleorg"]
    assert facts["aws:principalorgpaths"] == ["o-exampleorg/r-ab12/"]
    assert facts["aws:resourceorgid"] == ["o-otherorg11"]
    assert facts["aws:resourceorgpaths"] == ["o-otherorg11/r-cd34/"]
    root = facts_of(Principal.account_root(ACCOUNT), REQUEST, ACCOUNT, ORG, ORG)
    assert root["aws:principalorgid"] == root["aws:resourceorgid"] == ["o-exampleorg"]
    # Outside an organization (or a resource of no known account): no such keys.
    alone = facts_of(_session(), REQUEST, None, None, ORG)
    assert not {key for key in alone if "orgid" in key or "orgpaths" in key}


def test_organization_keys_decide_and_a_memoised_decision_never_outlives_them(evaluations: list[int]) -> None:
    """The documented org-sharing pattern allows members; a Deny on the organization stops them; and a
    decision memoised for one organization is never reused for another."""
    org_only = _policy(
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:PrincipalOrgID": "o-exampleorg", "aws:ResourceOrgID": "o-exampleorg"},
                "ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-exampleorg/r-ab12/*"},
            },
        }
    )
    places: dict[str, Any] = {ACCOUNT: ORG}
    authorizer = Authorizer(
        _Directory(CallerPolicies(identity=[org_only])),  # type: ignore[arg-type]
        organizations=places.get,
    )
    ctx = _ctx(_session())
    for _ in range(2):
        assert authorizer.decide(ctx, "secretsmanager:GetSecretValue", SECRET).allowed
    places[ACCOUNT] = ("o-otherorg11", ("o-otherorg11/r-cd34/",))
    assert not authorizer.decide(ctx, "secretsmanager:GetSecretValue", SECRET).allowed
    del places[ACCOUNT]
    assert not authorizer.decide(ctx, "secretsmanager:GetSecretValue", SECRET).allowed
    assert evaluations[0] == 3
    fence = _policy(
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-exampleorg"}},
        },
    )
    fenced = Authorizer(
        _Directory(CallerPolicies(identity=[fence])),  # type: ignore[arg-type]
        organizations=lambda account: ORG,
    )
    assert not fenced.decide(ctx, "secretsmanager:GetSecretValue", SECRET).allowed


# -- the chain's rules ------------------------------------------------------------------------------


def _tags(**tags: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _refusal(principal: Principal, params: dict[str, Any]) -> tuple[str, str, int]:
    with pytest.raises(AWSError) as caught:
        lineage(principal, params)
    return caught.value.code, caught.value.message or "", caught.value.status


def test_transitive_tags_and_source_identity_are_inherited() -> None:
    caller = _session(
        session_tags=(("Project", "alpha"), ("team", "red")),
        transitive_tag_keys=("project",),
        source_identity="alice",
    )
    chain = lineage(caller, {"Tags": _tags(env="prod"), "TransitiveTagKeys": ["ENV"]})
    assert chain.tags == {"Project": "alpha", "env": "prod"}
    assert chain.transitive_keys == ["Project", "ENV"]
    assert chain.source_identity == "alice"
    assert lineage(caller, {"SourceIdentity": "alice"}).source_identity == "alice"
    # A user's call inherits nothing.
    user = _session(kind="IAMUser", session_tags=(("project", "x"),), transitive_tag_keys=("project",))
    assert lineage(user, {}).tags == {}


def test_the_chains_rules_are_answered_as_aws_does() -> None:
    caller = _session(
        session_tags=(("project", "alpha"),), transitive_tag_keys=("project",), source_identity="a1"
    )
    assert _refusal(caller, {"SourceIdentity": "mallory"}) == (
        "ValidationError",
        "The source identity is already set for this assume role session",
        400,
    )
    for key in ("project", "PROJECT"):
        code, message, status = _refusal(caller, {"Tags": _tags(**{key: "alpha"})})
        assert (code, status) == ("InvalidParameterValue", 400)
        assert "conflicts with a transitive tag key from the calling session" in message
    assert _refusal(caller, {"Tags": _tags(a="1"), "TransitiveTagKeys": ["b"]})[:2] == (
        "InvalidParameterValue",
        "The specified transitive tag key must be included in the requested tags.",
    )
    assert _refusal(caller, {"Tags": _tags(a="1", A="2")})[0] == "InvalidParameterValue"
