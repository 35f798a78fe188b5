"""Condition operators against "IAM JSON policy elements: Condition operators" and "Conditions with
multiple context keys or values" in the IAM User Guide.

- A key missing from the request: positive operators are false, negated ones true; ``...IfExists``
  makes any operator true; ``Null`` tests presence and cannot take ``IfExists``.
- Several values for a key are an OR (a NOR for negated operators); several keys, and several
  operators, are an AND.
- ``ForAllValues`` is true for a missing key or an empty set, ``ForAnyValue`` false.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from khoa.access.conditions import (
    UnknownOperator,
    conditions_hold,
    evaluate_operator,
    known_operator,
    parse_date,
    split_operator,
)

OPERATORS = [
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
]
NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "NumericNotEquals",
    "DateNotEquals",
    "NotIpAddress",
    "ArnNotEquals",
    "ArnNotLike",
}
# A policy value each operator can parse, so that only the missing key decides.
SAMPLE = {
    "String": "x",
    "Numer": "1",
    "DateE": "2024-01-01T00:00:00Z",
    "DateN": "2024-01-01T00:00:00Z",
    "DateL": "2024-01-01T00:00:00Z",
    "DateG": "2024-01-01T00:00:00Z",
    "Bool": "true",
    "Binar": "eA==",
    "IpAdd": "10.0.0.0/8",
    "NotIp": "10.0.0.0/8",
    "ArnEq": "arn:aws:iam::111122223333:root",
    "ArnLi": "arn:aws:iam::111122223333:root",
    "ArnNo": "arn:aws:iam::111122223333:root",
}


def holds(operator: str, key: str, values: Any, context: dict[str, Any]) -> bool:
    normal = {k.lower(): v if isinstance(v, list) else [v] for k, v in context.items()}
    return evaluate_operator(operator, key, values, normal)


# --- operator names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_operator_is_known_with_if_exists_and_qualifiers(operator: str) -> None:
    assert known_operator(operator)
    assert known_operator(operator + "IfExists")
    assert known_operator("ForAnyValue:" + operator)
    assert known_operator("ForAllValues:" + operator + "IfExists")


@pytest.mark.parametrize(
    "operator",
    ["StringEqual", "stringequals", "NullIfExists", "StringEqualsIfExist", "ForSomeValues:StringEquals", ""],
)
def test_unknown_operators(operator: str) -> None:
    assert not known_operator(operator)


def test_null_is_known() -> None:
    assert known_operator("Null")


def test_split_operator() -> None:
    assert split_operator("ForAnyValue:StringLikeIfExists") == ("ForAnyValue", "StringLike", True)
    assert split_operator("Bool") == ("", "Bool", False)


def test_unknown_operator_raises_when_evaluated() -> None:
    with pytest.raises(UnknownOperator):
        evaluate_operator("StringSortOf", "k", "v", {"k": ["v"]})


# --- missing keys, for every operator ---------------------------------------------------------------


@pytest.mark.parametrize("operator", OPERATORS)
def test_missing_key(operator: str) -> None:
    value = SAMPLE[operator[:5]] if operator[:5] in SAMPLE else SAMPLE["String"]
    assert holds(operator, "custom:absent", value, {}) is (operator in NEGATED)
    assert holds(operator + "IfExists", "custom:absent", value, {}) is True
    assert holds("ForAllValues:" + operator, "custom:absent", value, {}) is True
    assert holds("ForAnyValue:" + operator, "custom:absent", value, {}) is False


@pytest.mark.parametrize("operator", OPERATORS)
def test_empty_set_is_missing(operator: str) -> None:
    value = SAMPLE[operator[:5]] if operator[:5] in SAMPLE else SAMPLE["String"]
    assert holds("ForAllValues:" + operator, "custom:set", value, {"custom:set": []}) is True
    assert holds("ForAnyValue:" + operator, "custom:set", value, {"custom:set": []}) is False


# --- each family -----------------------------------------------------------------------------------

CASES: list[tuple[str, Any, Any, bool]] = [
    # (operator, policy values, request value(s), holds)
    ("StringEquals", "prod", "prod", True),
    ("StringEquals", "prod", "Prod", False),
    ("StringEquals", ["dev", "prod"], "prod", True),
    ("StringEquals", "pro*", "prod", False),  # no wildcards in StringEquals
    ("StringEquals", "pro*", "pro*", True),
    ("StringNotEquals", "prod", "dev", True),
    ("StringNotEquals", ["dev", "prod"], "dev", False),
    ("StringEqualsIgnoreCase", "PROD", "prod", True),
    ("StringEqualsIgnoreCase", "PROD", "prd", False),
    ("StringNotEqualsIgnoreCase", "PROD", "Prod", False),
    ("StringNotEqualsIgnoreCase", "PROD", "dev", True),
    ("StringLike", "prod-*", "prod-eu", True),
    ("StringLike", "prod-?", "prod-eu", False),
    ("StringLike", "*", "", True),
    ("StringLike", "", "", True),
    ("StringLike", "PROD-*", "prod-eu", False),
    ("StringNotLike", ["dev-*", "test-*"], "prod-eu", True),
    ("StringNotLike", ["dev-*", "prod-*"], "prod-eu", False),
    ("NumericEquals", "10", "10", True),
    ("NumericEquals", "10", "10.00", True),
    ("NumericEquals", "10", "1e1", False),  # integers and decimals only
    ("NumericEquals", "10", "1_0", False),
    ("NumericEquals", "10", "nan", False),
    ("NumericEquals", 10, "10", True),
    ("NumericEquals", "9007199254740993", "9007199254740992", False),  # exact, not float
    ("NumericNotEquals", "10", "11", True),
    ("NumericNotEquals", ["10", "11"], "11", False),
    ("NumericLessThan", "10", "-3", True),
    ("NumericLessThan", "10", "10", False),
    ("NumericLessThanEquals", "10", "10", True),
    ("NumericGreaterThan", "0.5", ".75", True),
    ("NumericGreaterThan", "0.5", "0.5", False),
    ("NumericGreaterThanEquals", "0.5", "0.5", True),
    ("NumericGreaterThanEquals", "0.5", "abc", False),
    ("NumericLessThan", "abc", "1", False),
    ("DateEquals", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", True),
    ("DateEquals", "2024-01-01", "2024-01-01T00:00:00Z", True),
    ("DateEquals", "2024", "1970-01-01T00:33:44Z", True),  # a bare number is epoch seconds
    ("DateEquals", "2024-03", "2024-03-01T00:00:00+00:00", True),
    ("DateEquals", "1704067200", "2024-01-01T00:00:00Z", True),
    ("DateEquals", "2024-01-01T02:00:00+02:00", "2024-01-01T00:00:00Z", True),
    ("DateEquals", "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00Z", True),
    ("DateNotEquals", "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", True),
    ("DateLessThan", "2024-01-01T00:00:00Z", "2023-12-31T23:59:59Z", True),
    ("DateLessThan", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", False),
    ("DateLessThanEquals", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", True),
    ("DateGreaterThan", "2024-01-01T00:00:00Z", "1704067201", True),
    ("DateGreaterThanEquals", "2024-01-01T00:00:00Z", "2023-06-01", False),
    ("DateGreaterThan", "2024-01-01T00:00:00Z", "not a date", False),
    ("DateGreaterThan", "*", "2024-01-01T00:00:00Z", False),  # no wildcards for dates
    ("Bool", "true", "true", True),
    ("Bool", "true", "TRUE", True),
    ("Bool", "false", "true", False),
    ("Bool", True, "true", True),
    ("Bool", False, "false", True),
    ("BinaryEquals", "QmluYXJ5VmFsdWVJbkJhc2U2NA==", "QmluYXJ5VmFsdWVJbkJhc2U2NA==", True),
    ("BinaryEquals", "QmluYXJ5VmFsdWVJbkJhc2U2NA==", "QmluYXJ5VmFsdWVJbkJhc2U2NQ==", False),
    ("BinaryEquals", "aGk=", "hi", True),  # a raw request value is compared as bytes
    ("BinaryEquals", "not base64!", "not base64!", False),
    ("IpAddress", "203.0.113.0/24", "203.0.113.255", True),
    ("IpAddress", "203.0.113.0/24", "203.0.114.0", False),
    ("IpAddress", "203.0.113.7", "203.0.113.7", True),
    ("IpAddress", "203.0.113.7", "203.0.113.8", False),
    ("IpAddress", "203.0.113.7/24", "203.0.113.200", True),  # host bits are ignored
    ("IpAddress", "2001:DB8:1234:5678::/64", "2001:db8:1234:5678:ffff::1", True),
    ("IpAddress", "2001:DB8:1234:5678::/64", "2001:db8:1234:5679::1", False),
    ("IpAddress", "::/0", "10.0.0.1", False),  # an IPv4 caller is not in an IPv6 range
    ("IpAddress", "0.0.0.0/0", "2001:db8::1", False),
    ("IpAddress", "0.0.0.0/0", "::ffff:192.0.2.1", True),  # IPv4-mapped IPv6 is IPv4
    ("IpAddress", "10.0.0.0/8", "not-an-ip", False),
    ("IpAddress", "not-a-cidr", "10.0.0.1", False),
    ("NotIpAddress", "10.0.0.0/8", "192.0.2.1", True),
    ("NotIpAddress", ["192.0.2.0/24", "10.0.0.0/8"], "10.0.0.1", False),
    ("ArnLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::111122223333:role/app-x", True),
    ("ArnLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::111122223333:user/app-x", False),
    ("ArnEquals", "arn:aws:iam::*:role/app-*", "arn:aws:iam::111122223333:role/app-x", True),
    ("ArnEquals", "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:root", True),
    ("ArnNotLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::111122223333:role/db", True),
    (
        "ArnNotEquals",
        ["arn:aws:iam::1:root", "arn:aws:iam::111122223333:root"],
        "arn:aws:iam::111122223333:root",
        False,
    ),
]


@pytest.mark.parametrize(("operator", "policy", "request_value", "expected"), CASES)
def test_operator(operator: str, policy: Any, request_value: Any, expected: bool) -> None:
    assert holds(operator, "custom:key", policy, {"custom:key": request_value}) is expected


@pytest.mark.parametrize(("operator", "policy", "request_value", "expected"), CASES)
def test_if_exists_is_the_operator_when_the_key_is_present(
    operator: str, policy: Any, request_value: Any, expected: bool
) -> None:
    assert holds(operator + "IfExists", "custom:key", policy, {"custom:key": request_value}) is expected


def test_condition_key_names_are_case_insensitive() -> None:
    assert holds("StringEquals", "AWS:ResourceTag/Env", "prod", {"aws:resourcetag/env": "prod"})


# --- Null ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "context", "expected"),
    [
        ("true", {}, True),
        ("true", {"k": "v"}, False),
        ("false", {"k": "v"}, True),
        ("false", {}, False),
        (True, {}, True),
        (False, {"k": "v"}, True),
        ("false", {"k": ""}, True),  # an empty string is a value
        ("true", {"k": []}, True),  # an empty set is no value
        (["true", "false"], {}, True),
    ],
)
def test_null(policy: Any, context: dict[str, Any], expected: bool) -> None:
    assert holds("Null", "k", policy, context) is expected


# --- set operators ---------------------------------------------------------------------------------

SET_CASES = [
    ("ForAllValues:StringEquals", ["a", "b"], ["a"], True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "c"], False),
    ("ForAllValues:StringLike", ["app-*"], ["app-1", "app-2"], True),
    ("ForAllValues:StringLike", ["app-*"], ["app-1", "db"], False),
    ("ForAllValues:StringNotEquals", ["x", "y"], ["a", "b"], True),
    ("ForAllValues:StringNotEquals", ["x", "y"], ["a", "y"], False),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "b"], True),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "d"], False),
    ("ForAnyValue:StringNotEquals", ["a", "b"], ["a", "c"], True),
    ("ForAnyValue:StringNotEquals", ["a", "b"], ["a", "b"], False),
    ("ForAnyValue:StringNotEquals", ["a", "b"], ["b"], False),
    ("ForAnyValue:StringLike", ["tenant-*"], ["purpose", "tenant-1"], True),
    ("ForAnyValue:StringNotLike", ["tenant-*"], ["tenant-1", "tenant-2"], False),
    ("ForAllValues:NumericLessThan", "10", ["1", "2", "9"], True),
    ("ForAllValues:NumericLessThan", "10", ["1", "20"], False),
    ("ForAnyValue:IpAddress", "10.0.0.0/8", ["192.0.2.1", "10.0.0.1"], True),
    (
        "ForAllValues:ArnLike",
        "arn:aws:iam::*:role/*",
        ["arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"],
        True,
    ),
    ("ForAllValues:StringEqualsIfExists", ["a"], ["a"], True),
    ("ForAnyValue:StringEqualsIfExists", ["a"], ["b"], False),
    # Without a qualifier, a multivalued key matches when any of its values does (NOR when negated).
    ("StringEquals", "a", ["b", "a"], True),
    ("StringNotEquals", "a", ["b", "a"], False),
]


@pytest.mark.parametrize(("operator", "policy", "request_values", "expected"), SET_CASES)
def test_set_operators(operator: str, policy: Any, request_values: list[str], expected: bool) -> None:
    assert holds(operator, "custom:set", policy, {"custom:set": request_values}) is expected


# --- several keys and operators --------------------------------------------------------------------


def test_keys_and_operators_are_anded() -> None:
    context = {"aws:resourcetag/env": ["prod"], "aws:sourceip": ["10.0.0.1"]}
    assert conditions_hold(
        {"StringEquals": {"aws:ResourceTag/env": "prod"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        context,
    )
    assert not conditions_hold(
        {"StringEquals": {"aws:ResourceTag/env": "prod"}, "IpAddress": {"aws:SourceIp": "192.0.2.0/24"}},
        context,
    )
    assert not conditions_hold(
        {"StringEquals": {"aws:ResourceTag/env": "prod", "aws:ResourceTag/team": "a"}}, context
    )


def test_empty_condition_block_holds() -> None:
    assert conditions_hold({}, {})
    assert conditions_hold(None, {})


def test_malformed_condition_entries_never_hold() -> None:
    assert not conditions_hold({"StringEquals": "not-an-object"}, {})


# --- policy variables in condition values ----------------------------------------------------------

VARS = {
    "aws:username": ["alice"],
    "aws:principaltag/team": ["red"],
    "aws:resourcetag/team": ["red"],
    "custom:n": ["5"],
    "custom:max": ["5"],
    "custom:flag": ["true"],
    "aws:principalarn": ["arn:aws:iam::111122223333:user/alice"],
}


@pytest.mark.parametrize(
    ("operator", "key", "policy", "expected"),
    [
        ("StringEquals", "aws:ResourceTag/team", "${aws:PrincipalTag/team}", True),
        ("StringNotEquals", "aws:ResourceTag/team", "${aws:PrincipalTag/team}", False),
        ("StringLike", "aws:ResourceTag/team", "${aws:PrincipalTag/team}*", True),
        ("StringEqualsIgnoreCase", "aws:ResourceTag/team", "${aws:PrincipalTag/team}", True),
        ("ArnEquals", "aws:PrincipalArn", "arn:aws:iam::*:user/${aws:username}", True),
        ("ArnLike", "aws:PrincipalArn", "arn:aws:iam::*:user/${aws:PrincipalTag/team}", False),
        ("Bool", "custom:flag", "${custom:flag}", True),
        # Numeric, Date, IP, Binary and Null values take no variables: the text is compared as is.
        ("NumericEquals", "custom:n", "${custom:max}", False),
        ("NumericNotEquals", "custom:n", "${custom:max}", True),
        ("DateEquals", "custom:n", "${custom:max}", False),
    ],
)
def test_variables_in_condition_values(operator: str, key: str, policy: str, expected: bool) -> None:
    assert evaluate_operator(operator, key, policy, VARS) is expected


def test_variables_are_text_when_the_policy_predates_them() -> None:
    context = {**VARS, "custom:literal": ["${aws:username}"]}
    assert evaluate_operator("StringEquals", "custom:literal", "${aws:username}", context, variables=False)
    assert not evaluate_operator("StringEquals", "aws:username", "${aws:username}", context, variables=False)


# A variable with no value (IAM User Guide, "Policy variables with no value"): the policy value is
# effectively null. No request value equals or matches it, so positive operators do not match it and
# negated ones ("inverted condition operators") do; a missing key is decided as for any values.
NULL = "${aws:PrincipalTag/missing}"
NULL_ARN = "arn:aws:iam::111122223333:user/${aws:PrincipalTag/missing}"
NEGATED_WITH_VARIABLES = [
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
]
POSITIVE_WITH_VARIABLES = [
    "StringEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "ArnEquals",
    "ArnLike",
    "Bool",
]
# The request's values of the key: one value, several (one of them the variable's own text, and one
# empty: null is equal to neither), an empty set, the key missing.
ONE = ["red"]
SEVERAL = ["red", "", NULL, "arn:aws:iam::111122223333:user/alice"]
# (qualifier, IfExists, request values) → does a negated operator hold, does a positive one hold.
NULL_CASES: list[tuple[str, bool, list[str] | None, bool, bool]] = [
    ("", False, ONE, True, False),
    ("", False, SEVERAL, True, False),
    ("", False, [], True, False),
    ("", False, None, True, False),
    ("", True, ONE, True, False),
    ("", True, SEVERAL, True, False),
    ("", True, None, True, True),  # IfExists: a missing key holds whatever the values
    # ForAllValues: every request value matches no policy value (negated) / some one (positive).
    ("ForAllValues:", False, ONE, True, False),
    ("ForAllValues:", False, SEVERAL, True, False),
    ("ForAllValues:", False, [], True, True),  # an empty set and a missing key: true, as ever
    ("ForAllValues:", False, None, True, True),
    ("ForAllValues:", True, SEVERAL, True, False),
    ("ForAllValues:", True, None, True, True),
    # ForAnyValue: some request value matches no policy value (negated) / some one (positive); without a
    # request value there is none to differ from null, so a missing key stays false.
    ("ForAnyValue:", False, ONE, True, False),
    ("ForAnyValue:", False, SEVERAL, True, False),
    ("ForAnyValue:", False, [], False, False),
    ("ForAnyValue:", False, None, False, False),
    ("ForAnyValue:", True, SEVERAL, True, False),
    ("ForAnyValue:", True, None, False, False),
]


def _null_case(operator: str, qualifier: str, if_exists: bool, request: list[str] | None) -> bool:
    name = f"{qualifier}{operator}{'IfExists' if if_exists else ''}"
    value = NULL_ARN if operator.startswith("Arn") else NULL
    context = {} if request is None else {"custom:set": request}
    return holds(name, "custom:set", value, {"aws:principaltag/team": "red", **context})


@pytest.mark.parametrize("operator", NEGATED_WITH_VARIABLES)
@pytest.mark.parametrize(("qualifier", "if_exists", "request_values", "negated", "_positive"), NULL_CASES)
def test_a_negated_operator_matches_a_variable_with_no_value(
    operator: str,
    qualifier: str,
    if_exists: bool,
    request_values: list[str] | None,
    negated: bool,
    _positive: bool,
) -> None:
    """AWS's example: Deny with StringNotEquals {"s3:ExistingObjectTag/Team": "${aws:PrincipalTag/Team}"}
    denies a principal without the tag (the value is not equal to the effectively null value)."""
    assert _null_case(operator, qualifier, if_exists, request_values) is negated


@pytest.mark.parametrize("operator", POSITIVE_WITH_VARIABLES)
@pytest.mark.parametrize(("qualifier", "if_exists", "request_values", "_negated", "positive"), NULL_CASES)
def test_a_positive_operator_does_not_match_a_variable_with_no_value(
    operator: str,
    qualifier: str,
    if_exists: bool,
    request_values: list[str] | None,
    _negated: bool,
    positive: bool,
) -> None:
    """A positive operator never matches null; only a missing key (IfExists, ForAllValues) makes it hold."""
    assert _null_case(operator, qualifier, if_exists, request_values) is positive


@pytest.mark.parametrize(
    ("operator", "policy", "request_values", "expected"),
    [
        # The resolved values decide; null ones add nothing (and take nothing away).
        ("StringNotEquals", [NULL, "secret"], ["a"], True),
        ("StringNotEquals", [NULL, "secret"], ["a", "secret"], False),
        ("ForAllValues:StringNotEquals", [NULL, "secret"], ["a", "b"], True),
        ("ForAllValues:StringNotEquals", [NULL, "secret"], ["a", "secret"], False),
        ("ForAnyValue:StringNotEquals", [NULL, "secret"], ["secret"], False),
        ("ForAnyValue:StringNotEquals", [NULL, "secret"], ["secret", "a"], True),
        ("ForAnyValue:StringNotLike", [NULL, "s*"], ["secret", "sea"], False),
        ("ForAllValues:StringEquals", [NULL, "a"], ["a"], True),
        ("ForAllValues:StringEquals", [NULL, "a"], ["a", NULL], False),
        ("ForAnyValue:StringLike", [NULL, "a*"], ["b", "ab"], True),
        # A value with one resolved and one unresolved variable is null as a whole.
        ("StringNotLike", ["${aws:PrincipalTag/team}-${aws:PrincipalTag/missing}*"], ["red-x"], True),
        # A default is a value: the variable is not null.
        ("StringNotEquals", ["${aws:PrincipalTag/missing, 'red'}"], ["red"], False),
    ],
)
def test_resolved_values_decide_beside_null_ones(
    operator: str, policy: list[str], request_values: list[str], expected: bool
) -> None:
    context = {"aws:principaltag/team": "red", "custom:set": request_values}
    assert holds(operator, "custom:set", policy, context) is expected
    # Without the resolved values, the null ones alone: a negated operator holds, a positive one does not.
    alone = [value for value in policy if "missing}" in value]
    assert holds(operator, "custom:set", alone, context) is ("Not" in operator)


def test_a_variable_with_no_value_is_text_when_the_policy_predates_variables() -> None:
    context = {"custom:set": [NULL]}
    assert not evaluate_operator("StringNotEquals", "custom:set", NULL, context, variables=False)
    assert evaluate_operator("StringEquals", "custom:set", NULL, context, variables=False)
    # In a 2012-10-17 policy the same text is a variable with no value: null, unequal to the text.
    assert evaluate_operator("StringNotEquals", "custom:set", NULL, context)
    assert not evaluate_operator("StringEquals", "custom:set", NULL, context)


def test_the_deny_of_the_user_guide_applies_to_an_untagged_principal() -> None:
    deny = {"StringNotEquals": {"s3:ExistingObjectTag/Team": "${aws:PrincipalTag/Team}"}}
    tagged = {"s3:existingobjecttag/team": ["red"], "aws:principaltag/team": ["red"]}
    assert not conditions_hold(deny, tagged)
    assert conditions_hold(deny, {**tagged, "aws:principaltag/team": ["blue"]})
    untagged = {"s3:existingobjecttag/team": ["red"]}
    assert conditions_hold(deny, untagged)
    assert conditions_hold(deny, {})  # neither tag: still denied


def test_other_values_still_count_when_one_variable_is_unresolved() -> None:
    values = ["${aws:PrincipalTag/missing}", "red"]
    assert evaluate_operator("StringEquals", "aws:ResourceTag/team", values, VARS)
    assert not evaluate_operator("StringNotEquals", "aws:ResourceTag/team", values, VARS)


def test_variable_default_in_a_condition() -> None:
    assert evaluate_operator("StringEquals", "aws:ResourceTag/team", "${aws:PrincipalTag/x, 'red'}", VARS)


# --- dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(1970, 1, 1, 0, 33, 44, tzinfo=UTC)),
        ("2024-07", datetime(2024, 7, 1, tzinfo=UTC)),
        ("2024-07-16", datetime(2024, 7, 16, tzinfo=UTC)),
        ("2024-07-16T19:20Z", datetime(2024, 7, 16, 19, 20, tzinfo=UTC)),
        ("2024-07-16T19:20:30+01:00", datetime(2024, 7, 16, 18, 20, 30, tzinfo=UTC)),
        ("2024-07-16T19:20:30.45Z", datetime(2024, 7, 16, 19, 20, 30, 450000, tzinfo=UTC)),
        ("1721157630", datetime(2024, 7, 16, 19, 20, 30, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        ("99999999999999999999", None),
    ],
)
def test_parse_date(text: str, expected: datetime | None) -> None:
    assert parse_date(text) == expected
