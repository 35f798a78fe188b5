"""Hypothesis strategies for policy documents: valid ones from a small vocabulary that makes
statements actually match generated requests, and malformed mutations of them.

Each mutation breaks exactly one rule of IAM's policy grammar, so every mutated document must be
refused by the parser (and so by every write path).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from khoa.access.conditions import known_operator

A = "111122223333"
B = "444455556666"
ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:*", "kms:Get*", "secretsmanager:GetSecretValue", "*"]
RESOURCES = [
    "*",
    f"arn:aws:kms:us-east-1:{A}:key/k1",
    f"arn:aws:kms:us-east-1:{A}:key/*",
    f"arn:aws:secretsmanager:us-east-1:{A}:secret:db-*",
]
PRINCIPALS: list[Any] = [
    "*",
    {"AWS": "*"},
    {"AWS": A},
    {"AWS": f"arn:aws:iam::{A}:root"},
    {"AWS": f"arn:aws:iam::{A}:user/alice"},
    {"AWS": [f"arn:aws:iam::{A}:role/Deploy", B]},
    {"AWS": f"arn:aws:iam::{B}:root"},
    {"Service": "lambda.amazonaws.com"},
]
CONDITION_KEYS = ["aws:PrincipalAccount", "aws:username", "kms:CallerAccount", "aws:PrincipalTag/team"]
CONDITION_VALUES = [A, B, "alice", "bob", "red", "a*", "*"]
OPERATORS = [
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "StringEqualsIfExists",
    "StringNotEqualsIfExists",
    "ForAnyValue:StringEquals",
    "ForAllValues:StringLike",
    "StringEqualsIgnoreCase",
    "Null",
]


def _one_or_list(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=3))


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    block: dict[str, Any] = {}
    for operator in draw(st.lists(st.sampled_from(OPERATORS), max_size=2, unique=True)):
        keys = draw(st.lists(st.sampled_from(CONDITION_KEYS), min_size=1, max_size=2, unique=True))
        if operator == "Null":
            block[operator] = {k: draw(st.sampled_from(["true", "false"])) for k in keys}
        else:
            block[operator] = {k: draw(_one_or_list(CONDITION_VALUES)) for k in keys}
    return block


@st.composite
def statements(draw: st.DrawFn, *, resource_policy: bool, effect: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect or draw(st.sampled_from(["Allow", "Deny"]))}
    if draw(st.booleans()):
        statement["Sid"] = draw(st.sampled_from(["S1", "S2", "Grant", "Block"]))
    if resource_policy:
        if draw(st.integers(0, 9)) == 0:
            statement["NotPrincipal"] = {"AWS": draw(st.sampled_from([A, f"arn:aws:iam::{A}:user/bob"]))}
        else:
            statement["Principal"] = draw(st.sampled_from(PRINCIPALS))
    statement["NotAction" if draw(st.integers(0, 5)) == 0 else "Action"] = draw(_one_or_list(ACTIONS))
    statement["NotResource" if draw(st.integers(0, 5)) == 0 else "Resource"] = draw(_one_or_list(RESOURCES))
    condition = draw(conditions())
    if condition:
        statement["Condition"] = condition
    return statement


@st.composite
def documents(draw: st.DrawFn, *, resource_policy: bool) -> dict[str, Any]:
    items = draw(st.lists(statements(resource_policy=resource_policy), min_size=1, max_size=3))
    # Sids unique, so the same documents also satisfy IAM's own Sid rule.
    seen: set[str] = set()
    for item in items:
        if item.get("Sid") in seen:
            del item["Sid"]
        seen.add(item.get("Sid", ""))
    return {"Version": draw(st.sampled_from(["2012-10-17", "2008-10-17"])), "Statement": items}


# --- mutations: each breaks one grammar rule ----------------------------------------------------------

_NOT_STRINGS = st.one_of(
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=3), min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=1),
)


def _statement_of(document: dict[str, Any], index: int) -> dict[str, Any]:
    raw = document["Statement"]
    items = raw if isinstance(raw, list) else [raw]
    result: dict[str, Any] = items[index % len(items)]
    return result


@st.composite
def malformed(draw: st.DrawFn, *, resource_policy: bool = True) -> str:
    """A valid generated document with exactly one grammar rule broken, as JSON text."""
    document = copy.deepcopy(draw(documents(resource_policy=resource_policy)))
    statement = _statement_of(document, draw(st.integers(0, 2)))
    kind = draw(
        st.sampled_from(
            [
                "effect",
                "number_in_action",
                "number_in_resource",
                "action_type",
                "unknown_operator",
                "principal_type",
                "principal_value",
                "resource_and_not_resource",
                "action_and_not_action",
                "unknown_key",
                "condition_value",
                "version",
                "deep",
                "empty_list",
                "no_statement",
                "duplicate_key",
            ]
        )
    )
    if kind == "effect":
        statement["Effect"] = draw(
            st.one_of(_NOT_STRINGS, st.text(max_size=8).filter(lambda t: t not in ("Allow", "Deny")))
        )
    elif kind in ("number_in_action", "number_in_resource"):
        name = "Action" if kind == "number_in_action" else "Resource"
        name = name if name in statement else f"Not{name}"
        values = statement[name] if isinstance(statement[name], list) else [statement[name]]
        bad = draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()))
        statement[name] = [*values, bad] if draw(st.booleans()) else [bad]
    elif kind == "action_type":
        name = "Action" if "Action" in statement else "NotAction"
        statement[name] = draw(
            st.one_of(
                _NOT_STRINGS.filter(lambda v: not isinstance(v, list)), st.just([]), st.just([["kms:*"]])
            )
        )
    elif kind == "unknown_operator":
        operator = draw(
            st.one_of(
                st.sampled_from(
                    ["StringEqualz", "stringequals", "StringEquals ", "NullIfExists", "ForAny:Null"]
                ),
                st.text(min_size=1, max_size=12),
            ).filter(lambda o: not known_operator(o))
        )
        statement["Condition"] = {**statement.get("Condition", {}), operator: {"aws:username": "alice"}}
    elif kind == "principal_type":
        kind_name = draw(
            st.one_of(
                st.sampled_from(["aws", "Aws", "service", "AWS ", "Users"]), st.text(max_size=8)
            ).filter(lambda k: k not in ("AWS", "Service", "Federated", "CanonicalUser"))
        )
        statement.pop("NotPrincipal", None)
        statement["Principal"] = {kind_name: A}
    elif kind == "principal_value":
        statement.pop("NotPrincipal", None)
        statement["Principal"] = draw(
            st.one_of(
                _NOT_STRINGS,
                st.just({"AWS": 42}),
                st.just({"AWS": []}),
                st.just({"AWS": [A, 7]}),
                st.just({}),
                st.just({"AWS": "arn:aws:iam::*:root"}),
                st.just(["*"]),
            )
        )
    elif kind == "resource_and_not_resource":
        statement["Resource"] = "*"
        statement["NotResource"] = RESOURCES[1]
    elif kind == "action_and_not_action":
        statement["Action"] = "kms:Decrypt"
        statement["NotAction"] = "kms:Encrypt"
    elif kind == "unknown_key":
        key = draw(
            st.one_of(st.sampled_from(["Actions", "effect", "Principals", "Id"]), st.text(max_size=8)).filter(
                lambda k: (
                    k
                    not in (
                        "Sid",
                        "Effect",
                        "Principal",
                        "NotPrincipal",
                        "Action",
                        "NotAction",
                        "Resource",
                        "NotResource",
                        "Condition",
                    )
                )
            )
        )
        statement[key] = "x"
    elif kind == "condition_value":
        statement["Condition"] = {
            "StringEquals": {"aws:username": draw(st.sampled_from([None, [], [["a"]], {"a": "b"}, [None]]))}
        }
    elif kind == "version":
        document["Version"] = draw(
            st.one_of(_NOT_STRINGS, st.text(max_size=12)).filter(
                lambda v: v not in ("2012-10-17", "2008-10-17")
            )
        )
    elif kind == "empty_list":
        name = draw(st.sampled_from(["Action", "Resource"]))
        name = name if name in statement else f"Not{name}"
        statement[name] = []
    elif kind == "no_statement":
        document["Statement"] = draw(st.sampled_from([[], None, "x", 5, [[]]]))
    if kind == "deep":
        depth = draw(st.integers(20, 3000))
        return json.dumps(document)[:-1] + ', "Deep": ' + "[" * depth + "]" * depth + "}"
    if kind == "duplicate_key":
        text = json.dumps(document)
        return text.replace('"Effect": ', '"Effect": "Allow", "Effect": ', 1)
    return json.dumps(document)
