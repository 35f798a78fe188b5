"""The grant rules (``khoa.services.kms.grant_rules``) against an independent model of their meaning.

The model below is written from the AWS KMS developer guide, not from the implementation: a grant's
encryption-context constraint restricts only operations that take an encryption context (keys
compared case-insensitively, values exactly); a grant created by a principal whose CreateGrant comes
from grants may list only operations of a parent grant that allows CreateGrant and must admit no
encryption context that parent does not. "Admits" is checked over a finite universe of contexts large
enough to hold a witness for every difference the generated constraints can have (an extra key ``d``
and value ``3`` that no generated constraint uses).

Property: a grant created from a grant is never wider than its parent(s), and everything within them
is accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khoa.protocol.errors import AWSError
from khoa.services.kms import grant_rules
from khoa.services.kms.grant_rules import (
    CONTEXT_OPERATIONS,
    GRANTABLE_OPERATIONS,
    Parent,
    admits,
    at_least_as_strict,
    child_within,
    grant_id_from_token,
    make_grant_token,
    parse_constraint,
)

SYMMETRIC_OPERATIONS = sorted(
    {
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "CreateGrant",
        "RetireGrant",
        "DescribeKey",
    }
)
KEYS = ["a", "A", "b", "c"]  # "a" and "A" are one key to a constraint
VALUES = ["1", "2"]
# Every context over keys a..d and values 1..3: a witness for any difference between two constraints.
UNIVERSE: list[dict[str, str]] = [
    {k: v for k, v in zip("abcd", choice, strict=True) if v}
    for choice in itertools.product(["", "1", "2", "3"], repeat=4)
]


# -- the model ---------------------------------------------------------------------------------------


def model_admits(raw: Mapping[str, Any] | None, operation: str, context: Mapping[str, str]) -> bool:
    """Does a grant with constraints ``raw`` allow ``operation`` under ``context``? (AWS's words.)"""
    if raw and raw.get("SourceArn"):
        return False  # only an AWS service acting for that resource; never a Khoa caller
    if operation not in CONTEXT_OPERATIONS or not raw:
        return True
    lowered = {k.lower(): v for k, v in context.items()}
    if "EncryptionContextSubset" in raw:
        return all(lowered.get(k.lower()) == v for k, v in raw["EncryptionContextSubset"].items())
    pairs = {(k.lower(), v) for k, v in raw["EncryptionContextEquals"].items()}
    return pairs == set(lowered.items())


def model_within_one(
    child_ops: set[str], child_raw: Mapping[str, Any] | None, parent_ops: set[str], parent_raw: Any
) -> bool:
    """Is the child covered by this one parent, over the universe of contexts?"""
    if "CreateGrant" not in parent_ops or not child_ops <= parent_ops:
        return False
    return all(
        model_admits(parent_raw, "Decrypt", c) for c in UNIVERSE if model_admits(child_raw, "Decrypt", c)
    )


def model_within(child_ops: set[str], child_raw: Any, parents: list[tuple[set[str], Any]]) -> bool:
    """Each child operation from some parent that allows CreateGrant and admits all the child admits."""
    if not child_ops:
        return False
    return all(
        any(model_within_one({op}, child_raw, p_ops, p_raw) for p_ops, p_raw in parents) for op in child_ops
    )


# -- strategies --------------------------------------------------------------------------------------

contexts = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@st.composite
def constraints(draw: st.DrawFn, source_arns: bool = False) -> dict[str, Any] | None:
    kind = draw(st.sampled_from(["none", "subset", "equals"]))
    raw: dict[str, Any] = {}
    if kind == "subset":
        raw["EncryptionContextSubset"] = draw(contexts)
    elif kind == "equals":
        raw["EncryptionContextEquals"] = draw(contexts)
    if source_arns and draw(st.booleans()):
        raw["SourceArn"] = draw(st.sampled_from(["arn:aws:s3:::one", "arn:aws:s3:::two"]))
    return raw or None


operation_sets = st.sets(st.sampled_from(SYMMETRIC_OPERATIONS), min_size=1, max_size=5)
parents_strategy = st.lists(
    st.tuples(
        operation_sets.map(lambda ops: ops | {"CreateGrant"}) | operation_sets, constraints(source_arns=True)
    ),
    min_size=1,
    max_size=3,
)


def decide(child_ops: set[str], child_raw: Any, parents: list[tuple[set[str], Any]]) -> bool:
    return child_within(
        child_ops,
        parse_constraint(child_raw),
        [Parent(frozenset(ops), parse_constraint(raw)) for ops, raw in parents],
    )


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(parents_strategy, operation_sets, constraints(source_arns=True))
def test_a_child_grant_is_never_wider_than_its_parents(
    parents: list[tuple[set[str], Any]], child_ops: set[str], child_raw: Any
) -> None:
    if not decide(child_ops, child_raw, parents):
        return
    # Everything the child allows, some parent that allows CreateGrant allows too.
    for op in child_ops:
        assert any("CreateGrant" in p_ops and op in p_ops for p_ops, _ in parents), op
        for context in UNIVERSE:
            if model_admits(child_raw, op, context):
                assert any(
                    "CreateGrant" in p_ops
                    and op in p_ops
                    and all(
                        model_admits(p_raw, "Decrypt", c)
                        for c in UNIVERSE
                        if model_admits(child_raw, "Decrypt", c)
                    )
                    for p_ops, p_raw in parents
                ), (op, context)


@settings(max_examples=400, deadline=None)
@given(parents_strategy, operation_sets, constraints())
def test_the_decision_is_exactly_the_model(
    parents: list[tuple[set[str], Any]], child_ops: set[str], child_raw: Any
) -> None:
    # Without SourceArn constraints the rule is exact: accepted if and only if within a parent.
    plain = [(ops, raw if not (raw and raw.get("SourceArn")) else None) for ops, raw in parents]
    assert decide(child_ops, child_raw, plain) == model_within(child_ops, child_raw, plain)


@settings(max_examples=300, deadline=None)
@given(constraints(source_arns=True), st.sampled_from(sorted(GRANTABLE_OPERATIONS)), contexts)
def test_admits_is_the_model(raw: Any, operation: str, context: dict[str, str]) -> None:
    # A context whose keys collide when lower-cased is ambiguous; the implementation refuses those.
    if len({k.lower() for k in context}) != len(context) and raw and operation in CONTEXT_OPERATIONS:
        assert not admits(parse_constraint(raw), operation, context)
        return
    assert admits(parse_constraint(raw), operation, context) == model_admits(raw, operation, context)


@settings(max_examples=300, deadline=None)
@given(constraints(source_arns=True), constraints(source_arns=True), constraints(source_arns=True))
def test_at_least_as_strict_is_a_preorder(a: Any, b: Any, c: Any) -> None:
    x, y, z = parse_constraint(a), parse_constraint(b), parse_constraint(c)
    assert at_least_as_strict(x, x)
    if at_least_as_strict(x, y) and at_least_as_strict(y, z):
        assert at_least_as_strict(x, z)


# -- AWS's examples ----------------------------------------------------------------------------------

SUBSET_IT = {"EncryptionContextSubset": {"Department": "IT"}}
EQUALS_IT = {"EncryptionContextEquals": {"Department": "IT"}}


@pytest.mark.parametrize(
    ("parent_ops", "parent_raw", "child_ops", "child_raw", "accepted"),
    [
        # The finding: CreateGrant + DescribeKey cannot mint Decrypt.
        ({"CreateGrant", "DescribeKey"}, None, {"Decrypt"}, None, False),
        ({"CreateGrant", "DescribeKey"}, None, {"DescribeKey"}, None, True),
        ({"CreateGrant", "DescribeKey"}, None, {"CreateGrant", "DescribeKey"}, None, True),
        # A grant without CreateGrant is no parent at all.
        ({"Decrypt"}, None, {"Decrypt"}, None, False),
        # "the child grant can add key-value pairs to an EncryptionContextSubset constraint ... but it
        # cannot remove them"; "can change ... Subset ... to ... Equals, but not the reverse".
        ({"CreateGrant", "Decrypt"}, SUBSET_IT, {"Decrypt"}, None, False),
        (
            {"CreateGrant", "Decrypt"},
            SUBSET_IT,
            {"Decrypt"},
            {"EncryptionContextSubset": {"Department": "IT", "Project": "x"}},
            True,
        ),
        ({"CreateGrant", "Decrypt"}, SUBSET_IT, {"Decrypt"}, EQUALS_IT, True),
        ({"CreateGrant", "Decrypt"}, EQUALS_IT, {"Decrypt"}, SUBSET_IT, False),
        ({"CreateGrant", "Decrypt"}, EQUALS_IT, {"Decrypt"}, EQUALS_IT, True),
        (
            {"CreateGrant", "Decrypt"},
            EQUALS_IT,
            {"Decrypt"},
            {"EncryptionContextEquals": {"Department": "IT", "Project": "x"}},
            False,
        ),
        # Keys are case-insensitive in constraints, values are not.
        (
            {"CreateGrant", "Decrypt"},
            SUBSET_IT,
            {"Decrypt"},
            {"EncryptionContextSubset": {"department": "IT"}},
            True,
        ),
        (
            {"CreateGrant", "Decrypt"},
            SUBSET_IT,
            {"Decrypt"},
            {"EncryptionContextSubset": {"Department": "it"}},
            False,
        ),
        # The constraint binds the child even for operations it does not restrict.
        ({"CreateGrant", "DescribeKey"}, EQUALS_IT, {"DescribeKey"}, None, False),
    ],
)
def test_aws_examples(
    parent_ops: set[str], parent_raw: Any, child_ops: set[str], child_raw: Any, accepted: bool
) -> None:
    assert decide(child_ops, child_raw, [(parent_ops, parent_raw)]) is accepted


def test_parents_cover_operations_together_but_never_loosen_a_constraint() -> None:
    encrypt_anywhere = ({"CreateGrant", "Encrypt"}, None)
    decrypt_it_only = ({"CreateGrant", "Decrypt"}, EQUALS_IT)
    parents = [encrypt_anywhere, decrypt_it_only]
    assert not decide({"Encrypt", "Decrypt"}, None, parents)
    assert decide({"Encrypt", "Decrypt"}, EQUALS_IT, parents)
    assert decide({"Encrypt"}, None, parents)


def test_constraints_restrict_only_operations_with_an_encryption_context() -> None:
    constraint = parse_constraint(EQUALS_IT)
    assert admits(constraint, "DescribeKey", None)
    assert admits(constraint, "RetireGrant", {})
    assert not admits(constraint, "Decrypt", {})
    assert admits(constraint, "Decrypt", {"department": "IT"})
    assert not admits(constraint, "Decrypt", {"Department": "IT", "x": "y"})
    # Two keys that are one key to the constraint: ambiguous, so refused.
    assert not admits(parse_constraint(SUBSET_IT), "Decrypt", {"Department": "IT", "DEPARTMENT": "HR"})


@pytest.mark.parametrize(
    "raw",
    [
        {"EncryptionContextSubset": {"a": "1"}, "EncryptionContextEquals": {"a": "1"}},
        {"Unknown": {"a": "1"}},
        {"EncryptionContextSubset": ["a"]},
        {"EncryptionContextEquals": {"a": 1}},
        {"SourceArn": 7},
    ],
)
def test_an_unreadable_constraint_admits_nothing_and_bounds_nothing(raw: Any) -> None:
    constraint = parse_constraint(raw)
    assert not constraint.readable
    assert not admits(constraint, "DescribeKey", None)
    assert not admits(constraint, "Decrypt", {"a": "1"})
    assert not child_within(
        {"DescribeKey"},
        parse_constraint(None),
        [Parent(frozenset({"CreateGrant", "DescribeKey"}), constraint)],
    )
    assert not at_least_as_strict(constraint, parse_constraint(None))


def test_grant_tokens_round_trip_and_refuse_anything_else() -> None:
    grant_id = "ab" * 32
    assert grant_id_from_token(make_grant_token(grant_id)) == grant_id
    for token in ["", "garbage", make_grant_token("AB" * 32), make_grant_token("zz" * 32), "a" * 300]:
        with pytest.raises(AWSError) as info:
            grant_id_from_token(token)
        assert info.value.code == "InvalidGrantTokenException"
    assert grant_rules.GRANTABLE_OPERATIONS >= CONTEXT_OPERATIONS
