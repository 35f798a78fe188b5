"""The authoriser's memo of decisions (khoa.access.decisions): a repeated request is answered without
evaluating again, and a request that differs in any input an evaluation reads — a fact of its
context, the clock's second, the caller, a policy — is evaluated afresh, so the memo never changes
an answer."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import khoa.access.authorize as authorize_module
from khoa.access.authorize import Authorizer
from khoa.access.decisions import DecisionMemo
from khoa.access.directory import CallerPolicies
from khoa.access.policy import Policy
from khoa.auth.principal import Principal

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CUTOFF = datetime(2030, 1, 1, tzinfo=UTC)


def _alice(**changes: Any) -> Principal:
    fields = {
        "account_id": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "user_id": "AIDAALICE",
        "kind": "IAMUser",
        "name": "alice",
        "principal_id": "AIDAALICE",
    }
    fields.update(changes)
    return Principal(**fields)


def _policy(*statements: dict[str, Any]) -> Policy:
    return Policy.parse({"Version": "2012-10-17", "Statement": list(statements)}, "identity")


CONDITIONAL = _policy(
    {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {
            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
            "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
            "StringEquals": {"kms:EncryptionContext:app": "orders"},
        },
    }
)


class _Directory:
    """The authoriser's view of IAM: whatever ``policies`` holds now (replaced, never edited)."""

    def __init__(self, policies: CallerPolicies) -> None:
        self.policies = policies

    def for_principal(self, principal: Principal) -> CallerPolicies:
        return self.policies

    def clear(self) -> None:
        pass


def _ctx(principal: Principal, *, ip: str = "10.1.2.3", now: datetime = CUTOFF - timedelta(hours=1)) -> Any:
    return SimpleNamespace(
        principal=principal,
        region="us-east-1",
        service="kms",
        now=now,
        source_ip=ip,
        extras={},
        account_id=ACCOUNT,
    )


def _context(app: str) -> dict[str, list[str]]:
    return {"kms:encryptioncontext:app": [app]}


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the policies were really evaluated."""
    count = [0]
    real = authorize_module.evaluate

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(authorize_module, "evaluate", counting)
    return count


def test_a_repeated_request_is_evaluated_once(evaluations: list[int]) -> None:
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[CONDITIONAL])))  # type: ignore[arg-type]
    ctx = _ctx(_alice())
    for _ in range(5):
        assert authorizer.decide(ctx, "kms:Decrypt", KEY, context=_context("orders")).allowed
    assert evaluations[0] == 1


def test_every_fact_a_condition_reads_is_part_of_the_key(evaluations: list[int]) -> None:
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[CONDITIONAL])))  # type: ignore[arg-type]
    alice = _alice()
    # Alternating requests, each answered as a fresh evaluation would answer it.
    for _ in range(3):
        assert authorizer.decide(_ctx(alice), "kms:Decrypt", KEY, context=_context("orders")).allowed
        assert not authorizer.decide(
            _ctx(alice, ip="203.0.113.9"), "kms:Decrypt", KEY, context=_context("orders")
        ).allowed
        assert not authorizer.decide(_ctx(alice), "kms:Decrypt", KEY, context=_context("billing")).allowed
        assert not authorizer.decide(_ctx(alice), "kms:Encrypt", KEY, context=_context("orders")).allowed
    assert evaluations[0] == 4


def test_the_clock_decides_at_its_own_resolution(evaluations: list[int]) -> None:
    """aws:CurrentTime has a resolution of one second: the last second before the cutoff allows,
    the cutoff's own second denies, whatever was decided a moment before."""
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[CONDITIONAL])))  # type: ignore[arg-type]
    alice = _alice()
    before = _ctx(alice, now=CUTOFF - timedelta(microseconds=1))
    at = _ctx(alice, now=CUTOFF)
    assert authorizer.decide(before, "kms:Decrypt", KEY, context=_context("orders")).allowed
    assert not authorizer.decide(at, "kms:Decrypt", KEY, context=_context("orders")).allowed
    assert authorizer.decide(before, "kms:Decrypt", KEY, context=_context("orders")).allowed
    assert evaluations[0] == 2


def test_a_changed_policy_is_evaluated_at_once(evaluations: list[int]) -> None:
    directory = _Directory(CallerPolicies(identity=[CONDITIONAL]))
    authorizer = Authorizer(directory)  # type: ignore[arg-type]
    ctx = _ctx(_alice())
    assert authorizer.decide(ctx, "kms:Decrypt", KEY, context=_context("orders")).allowed
    deny = _policy({"Effect": "Deny", "Action": "kms:*", "Resource": "*"})
    directory.policies = CallerPolicies(identity=[CONDITIONAL, deny])
    decision = authorizer.decide(ctx, "kms:Decrypt", KEY, context=_context("orders"))
    assert not decision.allowed and decision.explicit_deny
    # A resource policy is part of the key by its text (or its parsed object) too.
    directory.policies = CallerPolicies(identity=[CONDITIONAL])
    everyone = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}]}
    )
    nobody = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "kms:*"}]}
    )
    kwargs: dict[str, Any] = {"context": _context("orders"), "key_policy": True}
    assert authorizer.decide(ctx, "kms:Decrypt", KEY, resource_policy=everyone, **kwargs).allowed
    assert not authorizer.decide(ctx, "kms:Decrypt", KEY, resource_policy=nobody, **kwargs).allowed
    assert authorizer.decide(ctx, "kms:Decrypt", KEY, resource_policy=everyone, **kwargs).allowed


def test_callers_that_differ_in_anything_are_decided_apart(evaluations: list[int]) -> None:
    tagged = _policy(
        {
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceIdentity": "deploy-bot"}},
        }
    )
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[tagged])))  # type: ignore[arg-type]
    bot = _ctx(_alice(source_identity="deploy-bot"))
    person = _ctx(_alice(source_identity="mallory"))
    assert authorizer.decide(bot, "kms:Decrypt", KEY).allowed
    assert not authorizer.decide(person, "kms:Decrypt", KEY).allowed
    assert authorizer.decide(bot, "kms:Decrypt", KEY).allowed
    assert evaluations[0] == 2


def test_the_memo_matches_fresh_evaluation_on_random_requests() -> None:
    """A long random sequence over a small pool of inputs (so that most requests repeat one seen
    before) decides exactly as an authoriser without a memo."""
    rng = random.Random(1305)
    policies = [
        CallerPolicies(identity=[CONDITIONAL]),
        CallerPolicies(
            identity=[CONDITIONAL, _policy({"Effect": "Deny", "Action": "kms:Decrypt", "Resource": KEY})]
        ),
        CallerPolicies(identity=[_policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})]),
    ]
    directory = _Directory(policies[0])
    memoised = Authorizer(directory)  # type: ignore[arg-type]
    callers = [_alice(), _alice(source_identity="x"), _alice(session_tags=(("team", "red"),))]
    times = [CUTOFF - timedelta(seconds=1), CUTOFF, CUTOFF + timedelta(days=1)]
    for _ in range(2_000):
        if rng.random() < 0.02:
            directory.policies = rng.choice(policies)
        ctx = _ctx(rng.choice(callers), ip=rng.choice(["10.0.0.1", "192.0.2.1"]), now=rng.choice(times))
        action = rng.choice(["kms:Decrypt", "kms:Encrypt"])
        resource = rng.choice([KEY, KEY + "-other"])
        context = _context(rng.choice(["orders", "billing"]))
        fresh = Authorizer(directory).decide(ctx, action, resource, context=context)  # type: ignore[arg-type]
        assert memoised.decide(ctx, action, resource, context=context) == fresh


def test_the_memo_is_bounded_and_cleared_with_the_caches() -> None:
    memo = DecisionMemo(max_size=3)
    decision = authorize_module.Decision(True)
    for n in range(3):
        memo.put(memo.key((n,), (), {}), decision, ())
    assert len(memo) == 3
    memo.put(memo.key((9,), (), {}), decision, ())
    assert len(memo) == 1  # full: emptied, then the new entry
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[CONDITIONAL])))  # type: ignore[arg-type]
    authorizer.decide(_ctx(_alice()), "kms:Decrypt", KEY, context=_context("orders"))
    assert len(authorizer._decisions) == 1
    authorizer.clear()
    assert len(authorizer._decisions) == 0


def test_a_context_value_that_cannot_be_hashed_is_evaluated_every_time(evaluations: list[int]) -> None:
    """A service's context value that is not text (never expected) must not fail the request."""
    authorizer = Authorizer(_Directory(CallerPolicies(identity=[CONDITIONAL])))  # type: ignore[arg-type]
    context: dict[str, Any] = {"kms:encryptioncontext:app": ["orders"], "khoa:odd": [{"not": "text"}]}
    for _ in range(2):
        assert authorizer.decide(_ctx(_alice()), "kms:Decrypt", KEY, context=context).allowed
    assert evaluations[0] == 2
