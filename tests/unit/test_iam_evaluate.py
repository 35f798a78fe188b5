"""AWS's policy evaluation logic, table-driven from ``tests/vectors/policy_cases.json``.

Each case's expected decision was written from the IAM User Guide ("Policy evaluation logic",
"Cross-account policy evaluation logic", "Permissions boundaries", "Session policies", "AWS JSON policy
elements: Principal / NotPrincipal", the condition-operator and policy-variable references, and the
KMS Developer Guide's key-policy pages), not from the engine. The property tests at the end check the
monotonicity AWS's logic implies: adding a Deny never grants, removing an Allow never grants, and
boundaries and session policies only narrow.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from khoa.access.evaluate import (
    ACCOUNT,
    CALLER,
    ROLE,
    Decision,
    Request,
    evaluate,
    principal_match,
)
from khoa.access.policy import Policy, PolicyError, Statement
from khoa.auth.principal import Principal

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "policy_cases.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
A = "111111111111"
B = "222222222222"


# --- the small helper that turns a vector into a request -------------------------------------------


def make_principal(spec: str) -> Principal:
    """``root@ACCOUNT``, ``user:[/path/]NAME@ACCOUNT`` or ``role:ROLE/SESSION@ACCOUNT``."""
    who, account = spec.rsplit("@", 1)
    if who == "root":
        return Principal.account_root(account)
    kind, name = who.split(":", 1)
    if kind == "user":
        user = name.rsplit("/", 1)[-1]
        uid = f"AIDA{user.upper()}"
        arn = f"arn:aws:iam::{account}:user/{name.lstrip('/')}"
        return Principal(account, arn, uid, "IAMUser", name=user, principal_id=uid)
    role, session = name.split("/", 1)
    rid = f"AROA{role.upper()}"
    return Principal(
        account,
        f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        f"{rid}:{session}",
        "AssumedRole",
        name=role,
        principal_id=rid,
        session_name=session,
    )


def base_context(principal: Principal, tags: dict[str, str]) -> dict[str, list[str]]:
    """The global keys authorize() puts in every request, for the principal."""
    types = {"Root": "Account", "IAMUser": "User", "AssumedRole": "AssumedRole"}
    arn = principal.arn
    if principal.kind == "AssumedRole":
        arn = f"arn:aws:iam::{principal.account_id}:role/{principal.name}"
    context = {
        "aws:principalarn": [arn],
        "aws:principalaccount": [principal.account_id],
        "aws:principaltype": [types[principal.kind]],
        "aws:userid": [principal.user_id],
    }
    if principal.kind == "IAMUser":
        context["aws:username"] = [principal.name]
    for key, value in tags.items():
        context[f"aws:principaltag/{key.lower()}"] = [value]
    return context


def as_policy(raw: Any, source: str) -> Policy:
    """A full document, or a list of statements read as a Version 2012-10-17 policy."""
    if isinstance(raw, list):
        if not raw:
            return Policy((), source)
        raw = {"Version": "2012-10-17", "Statement": raw}
    return Policy.parse(raw, source)


def run_case(case: dict[str, Any]) -> Decision:
    principal = make_principal(case["principal"])
    context = base_context(principal, case.get("principal_tags", {}))
    for key, value in case.get("context", {}).items():
        context[key.lower()] = value if isinstance(value, list) else [value]
    request = Request(
        principal=principal,
        action=case["action"],
        resource=case["resource"],
        resource_account=case.get("resource_account", principal.account_id),
        context=context,
    )
    resource = case.get("resource_policy")
    boundary = case.get("boundary")
    return evaluate(
        request,
        identity=[as_policy(p, "identity") for p in case.get("identity", [])],
        resource=as_policy(resource, "resource") if resource is not None else None,
        boundary=as_policy(boundary, "boundary") if boundary is not None else None,
        session=[as_policy(p, "session") for p in case.get("session", [])],
        key_policy=case.get("key_policy", False),
        resource_kind=case.get("resource_kind", "resource-based"),
    )


def outcome(decision: Decision) -> str:
    if decision.allowed:
        return "allow"
    return f"{'explicit' if decision.explicit_deny else 'implicit'} {decision.policy_kind}"


def test_the_table_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 150
    assert len({c["name"] for c in CASES}) == len(CASES)
    assert {c["expect"] for c in CASES} >= {
        "allow",
        "implicit identity-based",
        "explicit identity-based",
        "implicit resource-based",
        "explicit resource-based",
        "implicit permissions boundary",
        "explicit permissions boundary",
        "implicit session",
        "explicit session",
        "implicit role trust",
        "explicit role trust",
    }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_policy_case(case: dict[str, Any]) -> None:
    assert outcome(run_case(case)) == case["expect"]


# --- Decision.explain(): AWS's AccessDenied wording ------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "text"),
    [
        (Decision(False, "identity-based"), "because no identity-based policy allows the kms:Decrypt action"),
        (Decision(False, "resource-based"), "because no resource-based policy allows the kms:Decrypt action"),
        (
            Decision(False, "permissions boundary"),
            "because no permissions boundary allows the kms:Decrypt action",
        ),
        (Decision(False, "session"), "because no session policy allows the kms:Decrypt action"),
        (Decision(False, "role trust"), "because no role trust policy allows the kms:Decrypt action"),
        (Decision(False, "identity-based", True), "with an explicit deny in an identity-based policy"),
        (Decision(False, "resource-based", True), "with an explicit deny in a resource-based policy"),
        (Decision(False, "permissions boundary", True), "with an explicit deny in a permissions boundary"),
        (Decision(False, "session", True), "with an explicit deny in a session policy"),
        (Decision(False, "role trust", True), "with an explicit deny in the role trust policy"),
        (Decision(True), ""),
    ],
)
def test_explain_uses_aws_wording(decision: Decision, text: str) -> None:
    assert decision.explain("kms:Decrypt") == text


def test_explicit_deny_reports_the_deciding_statement() -> None:
    decision = run_case(
        {
            "principal": f"user:alice@{A}",
            "action": "kms:Decrypt",
            "resource": "*",
            "identity": [[{"Effect": "Allow", "Action": "*", "Resource": "*"}]],
            "resource_policy": [
                {"Sid": "NoDecrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt"}
            ],
        }
    )
    assert decision.explicit_deny and decision.deciding_sid == "NoDecrypt"
    assert decision.explain("kms:Decrypt") == "with an explicit deny in a resource-based policy"


# --- how a resource policy names a caller ----------------------------------------------------------


def _statement(principal: Any, effect: str = "Allow", element: str = "Principal") -> Any:
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": effect, element: principal, "Action": "*"}]}
    return Policy.parse(doc, "resource").statements[0]


@pytest.mark.parametrize(
    ("who", "principal", "how"),
    [
        (f"user:alice@{A}", "*", CALLER),
        (f"user:alice@{A}", {"AWS": "*"}, CALLER),
        (f"user:alice@{A}", {"AWS": A}, ACCOUNT),
        (f"user:alice@{A}", {"AWS": f"arn:aws:iam::{A}:root"}, ACCOUNT),
        (f"user:alice@{A}", {"AWS": f"arn:aws:iam::{A}:user/alice"}, CALLER),
        (f"user:alice@{A}", {"AWS": f"arn:aws:iam::{A}:user/bob"}, None),
        (f"user:alice@{A}", {"AWS": B}, None),
        (f"user:alice@{A}", {"AWS": [A, f"arn:aws:iam::{A}:user/alice"]}, CALLER),
        (f"root@{A}", {"AWS": A}, CALLER),
        (f"root@{A}", {"AWS": f"arn:aws:iam::{A}:root"}, CALLER),
        (f"root@{A}", {"AWS": f"arn:aws:iam::{A}:user/alice"}, None),
        (f"role:Deploy/ci@{A}", {"AWS": f"arn:aws:iam::{A}:role/Deploy"}, ROLE),
        (f"role:Deploy/ci@{A}", {"AWS": f"arn:aws:iam::{A}:role/team/Deploy"}, ROLE),
        (f"role:Deploy/ci@{A}", {"AWS": f"arn:aws:iam::{A}:role/Deployer"}, None),
        (f"role:Deploy/ci@{A}", {"AWS": f"arn:aws:sts::{A}:assumed-role/Deploy/ci"}, CALLER),
        (f"role:Deploy/ci@{A}", {"AWS": f"arn:aws:sts::{A}:assumed-role/Deploy/other"}, None),
        (f"role:Deploy/ci@{A}", {"AWS": [f"arn:aws:iam::{A}:role/Deploy", A]}, ROLE),
        (f"role:Deploy/ci@{A}", {"Service": "kms.amazonaws.com"}, None),
    ],
)
def test_principal_match(who: str, principal: Any, how: str | None) -> None:
    assert principal_match(_statement(principal), make_principal(who)) == how


def test_partial_wildcard_principals_are_refused_and_would_match_nothing() -> None:
    """IAM refuses ``user/ali*`` as a principal; even a statement built around one names nobody."""
    with pytest.raises(PolicyError, match="Invalid principal"):
        _statement({"AWS": f"arn:aws:iam::{A}:user/ali*"})
    statement = Statement(effect="Allow", actions=("*",), principals=(("AWS", f"arn:aws:iam::{A}:user/*"),))
    assert principal_match(statement, make_principal(f"user:alice@{A}")) is None


def test_statement_without_principal_names_nobody() -> None:
    statement = Policy.parse({"Statement": [{"Effect": "Allow", "Action": "*"}]}, "resource").statements[0]
    assert principal_match(statement, make_principal(f"user:alice@{A}")) is None


# --- properties: adding a Deny never grants, removing an Allow never grants -------------------------

ACTIONS = ["kms:Decrypt", "kms:Encrypt", "secretsmanager:GetSecretValue", "ssm:GetParameter"]
ACTION_PATTERNS = [*ACTIONS, "kms:*", "*", "secretsmanager:Get*", "ssm:?etParameter"]
RESOURCES = [
    f"arn:aws:kms:us-east-1:{A}:key/k1",
    f"arn:aws:secretsmanager:us-east-1:{A}:secret:prod/db-Ab12",
    f"arn:aws:ssm:us-east-1:{A}:parameter/app/x",
]
RESOURCE_PATTERNS = [*RESOURCES, "*", f"arn:aws:kms:*:{A}:key/*", "arn:aws:secretsmanager:*:*:secret:prod/*"]
PRINCIPALS = [
    f"user:alice@{A}",
    f"role:Deploy/ci@{A}",
    f"root@{A}",
    f"user:carol@{B}",
    f"role:Reader/job@{B}",
]
PRINCIPAL_VALUES = [
    "*",
    A,
    B,
    f"arn:aws:iam::{A}:root",
    f"arn:aws:iam::{A}:user/alice",
    f"arn:aws:iam::{A}:role/Deploy",
    f"arn:aws:sts::{A}:assumed-role/Deploy/ci",
    f"arn:aws:iam::{B}:user/carol",
    f"arn:aws:iam::{B}:role/Reader",
]
CONDITIONS = [
    None,
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringEquals": {"aws:ResourceTag/env": "prod"}},
    {"StringNotEquals": {"aws:PrincipalTag/team": "red"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}},
]


def _random_statement(rng: random.Random, resource_policy: bool) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": rng.choice(["Allow", "Allow", "Deny"])}
    key = "NotAction" if rng.random() < 0.15 else "Action"
    statement[key] = rng.sample(ACTION_PATTERNS, rng.randint(1, 2))
    if resource_policy:
        if rng.random() < 0.1:
            statement["NotPrincipal"] = {"AWS": rng.sample(PRINCIPAL_VALUES, rng.randint(1, 3))}
        else:
            statement["Principal"] = {"AWS": rng.sample(PRINCIPAL_VALUES, rng.randint(1, 2))}
    else:
        statement["NotResource" if rng.random() < 0.1 else "Resource"] = rng.choice(RESOURCE_PATTERNS)
    condition = rng.choice(CONDITIONS)
    if condition:
        statement["Condition"] = condition
    return statement


def _random_case(rng: random.Random) -> dict[str, Any]:
    case: dict[str, Any] = {
        "principal": rng.choice(PRINCIPALS),
        "action": rng.choice(ACTIONS),
        "resource": rng.choice(RESOURCES),
        "resource_account": A,
        "key_policy": rng.random() < 0.3,
        "identity": [[_random_statement(rng, False) for _ in range(rng.randint(0, 3))]],
        "context": {
            "aws:SecureTransport": rng.choice(["true", "false"]),
            "aws:ResourceTag/env": rng.choice(["prod", "dev"]),
            "aws:SourceIp": rng.choice(["10.1.1.1", "192.0.2.1"]),
            "aws:TagKeys": rng.choice([[], ["env"], ["env", "team"]]),
        },
        "principal_tags": rng.choice([{}, {"team": "red"}, {"team": "blue"}]),
    }
    if rng.random() < 0.7:
        case["resource_policy"] = [_random_statement(rng, True) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        case["boundary"] = [_random_statement(rng, False) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.3:
        case["session"] = [[_random_statement(rng, False) for _ in range(rng.randint(0, 2))]]
    return case


def _cases(seed: int, count: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_random_case(rng) for _ in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_adding_a_deny_never_grants(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for case in _cases(seed):
        before = run_case(case).allowed
        changed = copy.deepcopy(case)
        place = rng.choice(["identity", "resource", "boundary", "session"])
        deny = _random_statement(rng, place == "resource")
        deny["Effect"] = "Deny"
        if place == "identity":
            changed["identity"][0].append(deny)
        elif place == "resource":
            changed.setdefault("resource_policy", []).append(deny)
        elif place == "boundary" and "boundary" in changed:
            changed["boundary"].append(deny)
        elif place == "session" and "session" in changed:
            changed["session"][0].append(deny)
        after = run_case(changed).allowed
        assert not (after and not before), (case, deny, place)


@pytest.mark.parametrize("seed", range(5))
def test_removing_an_allow_never_grants(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for case in _cases(100 + seed):
        before = run_case(case).allowed
        changed = copy.deepcopy(case)
        pools = [changed["identity"][0]]
        if "resource_policy" in changed:
            pools.append(changed["resource_policy"])
        allows = [(pool, i) for pool in pools for i, s in enumerate(pool) if s["Effect"] == "Allow"]
        if not allows:
            continue
        pool, index = rng.choice(allows)
        del pool[index]
        after = run_case(changed).allowed
        assert not (after and not before), case


@pytest.mark.parametrize("seed", range(3))
def test_boundaries_and_session_policies_only_narrow(seed: int) -> None:
    for case in _cases(200 + seed):
        unbounded = copy.deepcopy(case)
        unbounded.pop("boundary", None)
        unbounded.pop("session", None)
        bounded = run_case(case).allowed
        assert not (bounded and not run_case(unbounded).allowed), case


@pytest.mark.parametrize("seed", range(3))
def test_explicit_deny_is_final(seed: int) -> None:
    """Whatever else the policies say, a matching identity Deny of everything denies (non-root)."""
    for case in _cases(300 + seed):
        if case["principal"].startswith("root@"):
            continue
        changed = copy.deepcopy(case)
        changed["identity"].append([{"Effect": "Deny", "Action": "*", "Resource": "*"}])
        decision = run_case(changed)
        assert not decision.allowed and decision.explicit_deny


# --- authorize(): the context it builds and the errors it raises -----------------------------------


def _ctx(principal: Principal, callers: dict[str, Any], service: str = "kms") -> Any:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from khoa.access.directory import CallerPolicies

    directory = SimpleNamespace(for_principal=lambda p: callers.get(p.principal_id, CallerPolicies()))
    return SimpleNamespace(
        directory=directory,  # read by _decide, not by the authoriser
        principal=principal,
        region="us-east-1",
        service=service,
        now=datetime(2024, 5, 1, tzinfo=UTC),
        source_ip="203.0.113.9",
        extras={},
        account_id=principal.account_id,
    )


def _decide(ctx: Any, action: str, resource: str, **kwargs: Any) -> Any:
    """Authorizer.decide with the fake directory of ``_ctx``."""
    from khoa.access.authorize import Authorizer

    return Authorizer(ctx.directory).decide(ctx, action, resource, **kwargs)


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_decide_treats_trust_policies_as_required() -> None:
    from khoa.access.directory import CallerPolicies

    alice = make_principal(f"user:alice@{A}")
    callers = {
        alice.principal_id: CallerPolicies(
            identity=[
                as_policy(
                    [{"Effect": "Allow", "Action": ["sts:AssumeRole", "secretsmanager:*"], "Resource": "*"}],
                    "identity",
                )
            ]
        )
    }
    ctx = _ctx(alice, callers, "sts")
    role = f"arn:aws:iam::{A}:role/Deploy"
    other = _doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:user/bob"}, "Action": "sts:AssumeRole"}
    )
    decision = _decide(ctx, "sts:AssumeRole", role, resource_policy=other)
    assert (decision.allowed, decision.policy_kind) == (False, "role trust")
    account = _doc({"Effect": "Allow", "Principal": {"AWS": A}, "Action": "sts:AssumeRole"})
    assert _decide(ctx, "sts:AssumeRole", role, resource_policy=account).allowed
    # A secret's resource policy is not required within the account: the identity allow suffices.
    bob_only = _doc({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:user/bob"}, "Action": "*"})
    secret = f"arn:aws:secretsmanager:us-east-1:{A}:secret:s-AbCdEf"
    assert _decide(ctx, "secretsmanager:GetSecretValue", secret, resource_policy=bob_only).allowed


def test_decide_uses_the_role_arn_with_its_path_for_aws_principal_arn() -> None:
    from khoa.access.directory import CallerPolicies

    session = make_principal(f"role:Deploy/ci@{A}")
    statement = {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{A}:role/platform/Deploy"}},
    }
    callers = {
        session.principal_id: CallerPolicies(
            identity=[as_policy([statement], "identity")], arn=f"arn:aws:iam::{A}:role/platform/Deploy"
        )
    }
    assert _decide(_ctx(session, callers), "kms:Decrypt", "*").allowed


def test_decide_adds_principal_tags() -> None:
    from khoa.access.directory import CallerPolicies

    alice = make_principal(f"user:alice@{A}")
    statement = {
        "Effect": "Allow",
        "Action": "ssm:GetParameter",
        "Resource": f"arn:aws:ssm:us-east-1:{A}:parameter/${{aws:PrincipalTag/Team}}/*",
    }
    callers = {
        alice.principal_id: CallerPolicies(
            identity=[as_policy([statement], "identity")], tags={"team": "red"}
        )
    }
    ctx = _ctx(alice, callers, "ssm")
    assert _decide(ctx, "ssm:GetParameter", f"arn:aws:ssm:us-east-1:{A}:parameter/red/x").allowed
    assert not _decide(ctx, "ssm:GetParameter", f"arn:aws:ssm:us-east-1:{A}:parameter/blue/x").allowed


def test_access_denied_message_forms() -> None:
    from khoa.access.authorize import access_denied

    alice = make_principal(f"user:alice@{A}")
    key = f"arn:aws:kms:us-east-1:{A}:key/k"
    error = access_denied(_ctx(alice, {}), "kms:Decrypt", key, Decision(False, "identity-based"))
    assert error.code == "AccessDeniedException" and error.status == 400
    assert error.message == (
        f"User: arn:aws:iam::{A}:user/alice is not authorized to perform: kms:Decrypt on resource: {key} "
        "because no identity-based policy allows the kms:Decrypt action"
    )
    error = access_denied(_ctx(alice, {}, "iam"), "iam:GetUser", "*", Decision(False, "resource-based", True))
    assert error.code == "AccessDenied" and error.status == 403
    assert error.message is not None and error.message.endswith(
        "with an explicit deny in a resource-based policy"
    )
