"""Properties of the policy language over generated policies and requests (Hypothesis).

1. Adding a Deny statement never widens access: whatever the identity, resource, boundary and session
   policies, a request the extended policies allow was allowed before.
2. A malformed document (a valid one with one grammar rule broken) is never accepted by the parser,
   and the parser never fails any other way (no RecursionError, TypeError ...).
3. A malformed document found in storage anyway, in any slot, makes the request an explicit deny.
4. What the parser accepts it reads the same way from the same JSON, and arbitrary text is either
   refused with PolicyError or parsed into statements, never a crash.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khoa.access.directory import parsed
from khoa.access.evaluate import Request, evaluate
from khoa.access.policy import Policy, PolicyError
from khoa.auth.principal import Principal
from tests.support.policy_strategies import (
    ACTIONS,
    RESOURCES,
    A,
    B,
    documents,
    malformed,
    statements,
)

CALLERS = [
    Principal(
        A, f"arn:aws:iam::{A}:user/alice", "AIDAALICE", "IAMUser", name="alice", principal_id="AIDAALICE"
    ),
    Principal(A, f"arn:aws:iam::{A}:user/bob", "AIDABOB", "IAMUser", name="bob", principal_id="AIDABOB"),
    Principal(
        A,
        f"arn:aws:sts::{A}:assumed-role/Deploy/ci",
        "AROADEPLOY:ci",
        "AssumedRole",
        name="Deploy",
        principal_id="AROADEPLOY",
        session_name="ci",
    ),
    Principal(
        B, f"arn:aws:iam::{B}:user/carol", "AIDACAROL", "IAMUser", name="carol", principal_id="AIDACAROL"
    ),
    Principal.account_root(A),
]
CONCRETE_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GetKeyPolicy", "secretsmanager:GetSecretValue"]
CONCRETE_RESOURCES = [r for r in RESOURCES if "*" not in r] + [
    f"arn:aws:kms:us-east-1:{A}:key/k2",
    f"arn:aws:secretsmanager:us-east-1:{A}:secret:db-AbCdEf",
]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    principal = draw(st.sampled_from(CALLERS))
    context: dict[str, list[str]] = {
        "aws:principalaccount": [principal.account_id],
        "kms:calleraccount": [principal.account_id],
    }
    if principal.kind == "IAMUser":
        context["aws:username"] = [principal.name]
    if draw(st.booleans()):
        context["aws:principaltag/team"] = [draw(st.sampled_from(["red", "blue"]))]
    return Request(
        principal=principal,
        action=draw(st.sampled_from(CONCRETE_ACTIONS)),
        resource=draw(st.sampled_from(CONCRETE_RESOURCES)),
        resource_account=A,
        context=context,
    )


def _policy(document: dict[str, Any] | None, source: str) -> Policy | None:
    return None if document is None else Policy.parse(document, source)


@st.composite
def policy_sets(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "identity": draw(st.lists(documents(resource_policy=False), max_size=2)),
        "resource": draw(st.none() | documents(resource_policy=True)),
        "boundary": draw(st.none() | documents(resource_policy=False)),
        "session": draw(st.lists(documents(resource_policy=False), max_size=1)),
        "key_policy": draw(st.booleans()),
    }


def _decide(request: Request, raw: dict[str, Any]) -> bool:
    return evaluate(
        request,
        identity=[Policy.parse(d, "identity") for d in raw["identity"]],
        resource=_policy(raw["resource"], "resource"),
        boundary=_policy(raw["boundary"], "boundary"),
        session=[Policy.parse(d, "session") for d in raw["session"]],
        key_policy=raw["key_policy"],
    ).allowed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), raw=policy_sets(), data=st.data())
def test_adding_a_deny_never_widens_access(
    request: Request, raw: dict[str, Any], data: st.DataObject
) -> None:
    before = _decide(request, raw)
    where = data.draw(st.sampled_from(["identity", "resource", "boundary", "session"]))
    deny = data.draw(statements(resource_policy=where == "resource", effect="Deny"))
    extended = json.loads(json.dumps(raw))
    if where in ("identity", "session"):
        if extended[where]:
            extended[where][0]["Statement"].append(deny)
        else:
            extended[where].append({"Version": "2012-10-17", "Statement": [deny]})
    elif extended[where] is None:
        # A resource policy or boundary that did not exist, now holding only the Deny.
        extended[where] = {"Version": "2012-10-17", "Statement": [deny]}
    else:
        extended[where]["Statement"].append(deny)
    after = _decide(request, extended)
    assert not (after and not before), (where, deny)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), raw=policy_sets(), data=st.data())
def test_an_unreadable_stored_document_anywhere_denies(
    request: Request, raw: dict[str, Any], data: st.DataObject
) -> None:
    """A malformed document found in storage, in whatever slot, makes the request an explicit deny
    (the generated actions are not the root's repair actions)."""
    where = data.draw(st.sampled_from(["identity", "resource", "boundary", "session"]))
    text = data.draw(malformed(resource_policy=where == "resource"))
    broken = parsed(text, where)
    identity = [Policy.parse(d, "identity") for d in raw["identity"]]
    kwargs: dict[str, Any] = {
        "identity": identity,
        "resource": _policy(raw["resource"], "resource"),
        "boundary": _policy(raw["boundary"], "boundary"),
        "session": [Policy.parse(d, "session") for d in raw["session"]],
        "key_policy": raw["key_policy"],
    }
    if where == "identity":
        kwargs["identity"] = [*identity, broken]
    elif where == "session":
        kwargs["session"] = [*kwargs["session"], broken]
    else:
        kwargs[where] = broken
    decision = evaluate(request, **kwargs)
    exempt = request.principal.is_root and where in ("identity", "boundary", "session")
    if not exempt:  # the root user is not subject to identity-based policies, boundaries or sessions
        assert not decision.allowed and decision.explicit_deny


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=malformed(resource_policy=True))
def test_malformed_resource_policies_are_never_accepted(text: str) -> None:
    try:
        Policy.parse(text, "resource", require_principal=True)
    except PolicyError:
        return
    raise AssertionError(f"accepted a malformed document: {text[:300]}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=malformed(resource_policy=False))
def test_malformed_identity_policies_are_never_accepted(text: str) -> None:
    try:
        Policy.parse(text, "identity", require_resource=True, iam=True)
    except PolicyError:
        return
    raise AssertionError(f"accepted a malformed document: {text[:300]}")


@settings(max_examples=100, deadline=None)
@given(document=documents(resource_policy=True))
def test_generated_valid_documents_parse_and_round_trip(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    first = Policy.parse(text, "resource", require_principal=True)
    assert Policy.parse(json.dumps(json.loads(text)), "resource", require_principal=True) == first
    assert len(first.statements) == len(document["Statement"])


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_is_refused_or_parsed_never_crashes(text: str) -> None:
    try:
        policy = Policy.parse(text, "resource")
    except PolicyError:
        return
    assert policy.statements and all(s.effect in ("Allow", "Deny") for s in policy.statements)


def test_vocabulary_actions_are_valid() -> None:
    """The strategies' vocabulary itself is grammatical (else property 2 would prove nothing)."""
    assert Policy.parse({"Statement": [{"Effect": "Allow", "Action": ACTIONS, "Resource": RESOURCES}]})
