"""Which costly key facts (tags, aliases, last use) a key policy asks for, on the account root's path
(red-team policy finding 4).

For the root of an account no SCPs govern, KMS builds the key's tags, aliases and days without use
only when the key policy may read them. That is decided on the policy as evaluation reads it, after
JSON decoding: ``"aws:Resource\\u0054ag/x"`` is the condition key ``aws:ResourceTag/x``, and a search of
the stored text missed it, so a Deny on it never saw the tags and did not apply to the root.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from khoa.services.kms.authz import _policy_asks

TAGS, ALIASES, LAST_USE = "resourcetag", "resourcealiases", "trailingdayswithoutkeyusage"
ROOT = {
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
    "Action": "kms:*",
    "Resource": "*",
}


def key_policy(condition: dict[str, Any] | None = None, resource: str = "*", sid: str = "Guard") -> str:
    guard: dict[str, object] = {
        "Sid": sid,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": resource,
    }
    if condition is not None:
        guard["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [ROOT, guard]})


def escaped(text: str, plain: str, escape: str) -> str:
    """``text`` with ``plain`` spelled with a JSON escape (the same document once decoded)."""
    assert plain in text
    return text.replace(plain, escape)


@pytest.mark.parametrize(
    ("policy", "wanted"),
    [
        # Condition keys, written with JSON escapes (and a character whose lower case is "k").
        (escaped(key_policy({"StringEquals": {"aws:ResourceTag/q": "true"}}), "Tag", "\\u0054ag"), {TAGS}),
        (escaped(key_policy({"StringEquals": {"AWS:RESOURCETAG/q": "true"}}), "TAG", "T\\u0041G"), {TAGS}),
        (
            escaped(
                key_policy({"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/q*"}}),
                "Aliases",
                "\\u0041liases",
            ),
            {ALIASES},
        ),
        (
            escaped(
                key_policy({"NumericLessThan": {"kms:TrailingDaysWithoutKeyUsage": "30"}}),
                "KeyUsage",
                "\\u212aeyUsage",
            ),
            {LAST_USE},
        ),
        # A policy variable that reads the fact, in a condition value or a Resource entry.
        (
            escaped(
                key_policy({"StringNotEquals": {"aws:PrincipalTag/team": "${aws:ResourceTag/team}"}}),
                "ResourceTag",
                "Resource\\u0054ag",
            ),
            {TAGS},
        ),
        (
            escaped(
                key_policy(resource="arn:aws:kms:*:*:key/${aws:ResourceTag/id}"),
                "ResourceTag",
                "Resource\\u0054ag",
            ),
            {TAGS},
        ),
    ],
)
def test_facts_are_asked_for_by_the_decoded_policy(policy: str, wanted: set[str]) -> None:
    assert _policy_asks(policy) == frozenset(wanted)


def test_facts_are_asked_for_by_what_evaluation_reads() -> None:
    assert _policy_asks(key_policy()) == frozenset()
    assert _policy_asks(key_policy({"StringEquals": {"aws:ResourceTag/q": "true"}})) == {TAGS}
    all_three = {
        "StringEquals": {"aws:ResourceTag/q": "true", "kms:ResourceAliases": "alias/q"},
        "NumericLessThan": {"kms:TrailingDaysWithoutKeyUsage": "30"},
    }
    assert _policy_asks(key_policy(all_three)) == {TAGS, ALIASES, LAST_USE}
    # A Sid is not read by evaluation: naming a fact there asks for nothing.
    assert _policy_asks(key_policy(sid="ResourceTagAndResourceAliasesGuard")) == frozenset()
