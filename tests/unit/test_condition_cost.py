"""Condition evaluation that does not multiply request values by policy values (red-team DoS finding
3: a key policy Deny with ``ForAnyValue:StringLike`` over ``kms:EncryptionContextKeys`` and 2500 values,
against an Encrypt with 7400 encryption-context pairs, took 18.5 million regex matches on the event
loop).

The prepared forms (sets, bounds, networks by prefix length, alternations of wildcard patterns grouped
by their first character) must answer exactly as the plain definition does: every request value
against every policy value, one at a time. ``_reference`` below is that definition, with a wildcard
matcher of its own (dynamic programming, no regex), and the tests compare the two on a broad table of
operators, qualifiers, ``IfExists``, case rules, policy variables and multivalued keys, on generated
cases, and on conditions large enough to fill several alternations. Those comparisons hold for the
code before the change as well; the budget (the last section) is new.

What an authorisation spends on conditions is counted: past the budget, a call tried on the event
loop (``khoa.blocking.on_the_loop``) stops with ``WouldBlock`` and runs again on a request thread, to
the same answer; small conditions, and large ones a request value cannot reach, stay on the loop.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khoa.access.conditions import conditions_hold, evaluate_operator, ip_address, parse_date
from khoa.access.matching import Pieces, pieces
from khoa.blocking import WouldBlock, on_the_loop

# --- the reference: every request value against every policy value --------------------------------


def _glob(tokens: list[str | None], value: str) -> bool:
    """Tokens (a character; None for ``*``; "" for ``?``) against the whole value, by dynamic
    programming: ``reach[j]`` is whether the tokens so far can match ``value[:j]``."""
    reach = [True] + [False] * len(value)
    for token in tokens:
        if token is None:
            for j in range(1, len(value) + 1):
                reach[j] = reach[j] or reach[j - 1]
        else:
            reach = [False] + [
                reach[j - 1] and (token == "" or value[j - 1] == token) for j in range(1, len(value) + 1)
            ]
    return reach[-1]


def _tokens(parts: Pieces) -> list[str | None]:
    return [
        char if literal or char not in "*?" else (None if char == "*" else "")
        for text, literal in parts
        for char in text
    ]


def _like(parts: Pieces, value: str) -> bool:
    return _glob(_tokens(parts), value)


def _arn(parts: Pieces, value: str) -> bool:
    """ArnLike: six colon-separated components; each of the first five matched on its own."""
    tokens = _tokens(parts)
    if value.count(":") < 5 or tokens.count(":") < 5:
        return False
    components: list[list[str | None]] = [[]]
    for token in tokens:
        if token == ":" and len(components) < 6:
            components.append([])
        else:
            components[-1].append(token)
    return all(_glob(c, v) for c, v in zip(components, value.split(":", 5), strict=True))


def _text(parts: Pieces) -> str:
    return "".join(text for text, _ in parts)


def _number(value: str) -> Decimal | None:
    value = value.strip()
    if not re.match(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$", value):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ip(actual: str, expected: Pieces) -> bool:
    address = ip_address(actual)
    try:
        network = ipaddress.ip_network(_text(expected).strip(), strict=False)
    except ValueError:
        return False
    return address is not None and address.version == network.version and address in network


def _binary(actual: str, expected: Pieces) -> bool:
    wanted = _decode(_text(expected))
    if wanted is None:
        return False
    got = _decode(actual)
    return got == wanted if got is not None else actual.encode() == wanted


def _numeric(check: Any) -> Any:
    def compare(actual: str, expected: Pieces) -> bool:
        a, e = _number(actual), _number(_text(expected))
        return a is not None and e is not None and check(a, e)

    return compare


def _dated(check: Any) -> Any:
    def compare(actual: str, expected: Pieces) -> bool:
        a, e = parse_date(actual), parse_date(_text(expected))
        return a is not None and e is not None and check(a, e)

    return compare


_EQ, _LT, _LE = (lambda a, e: a == e), (lambda a, e: a < e), (lambda a, e: a <= e)
_GT, _GE = (lambda a, e: a > e), (lambda a, e: a >= e)

# operator → (comparator, negated, takes policy variables)
_REFERENCE: dict[str, tuple[Any, bool, bool]] = {
    "StringEquals": (lambda a, e: a == _text(e), False, True),
    "StringNotEquals": (lambda a, e: a == _text(e), True, True),
    "StringEqualsIgnoreCase": (lambda a, e: a.lower() == _text(e).lower(), False, True),
    "StringNotEqualsIgnoreCase": (lambda a, e: a.lower() == _text(e).lower(), True, True),
    "StringLike": (lambda a, e: _like(e, a), False, True),
    "StringNotLike": (lambda a, e: _like(e, a), True, True),
    "NumericEquals": (_numeric(_EQ), False, False),
    "NumericNotEquals": (_numeric(_EQ), True, False),
    "NumericLessThan": (_numeric(_LT), False, False),
    "NumericLessThanEquals": (_numeric(_LE), False, False),
    "NumericGreaterThan": (_numeric(_GT), False, False),
    "NumericGreaterThanEquals": (_numeric(_GE), False, False),
    "DateEquals": (_dated(_EQ), False, False),
    "DateNotEquals": (_dated(_EQ), True, False),
    "DateLessThan": (_dated(_LT), False, False),
    "DateLessThanEquals": (_dated(_LE), False, False),
    "DateGreaterThan": (_dated(_GT), False, False),
    "DateGreaterThanEquals": (_dated(_GE), False, False),
    "Bool": (lambda a, e: a.strip().lower() == _text(e).strip().lower(), False, True),
    "BinaryEquals": (_binary, False, False),
    "IpAddress": (_ip, False, False),
    "NotIpAddress": (_ip, True, False),
    "ArnEquals": (lambda a, e: _arn(e, a), False, True),
    "ArnLike": (lambda a, e: _arn(e, a), False, True),
    "ArnNotEquals": (lambda a, e: _arn(e, a), True, True),
    "ArnNotLike": (lambda a, e: _arn(e, a), True, True),
}
OPERATORS = sorted(_REFERENCE)


def _reference(
    operator: str, key: str, policy_values: Any, context: dict[str, list[str]], *, variables: bool = True
) -> bool:
    qualifier = ""
    if operator.startswith(("ForAnyValue:", "ForAllValues:")):
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    compare, negated, takes_variables = _REFERENCE[base]
    values = policy_values if isinstance(policy_values, list) else [policy_values]
    raw = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    resolved = [pieces(v, context, variables=variables and takes_variables) for v in raw]
    # A value whose variable has no value is null: no request value equals or matches it (IAM User
    # Guide, "Policy variables with no value"), so it is left out; with none left, nothing matches.
    expected = [p for p in resolved if p is not None]
    actual = context.get(key.lower())
    if not actual:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated
    hits = [any(compare(v, e) for e in expected) for v in actual]
    if qualifier == "ForAllValues":
        return not any(hits) if negated else all(hits)
    if qualifier == "ForAnyValue":
        return not all(hits) if negated else any(hits)
    return not any(hits) if negated else any(hits)


def _check(operator: str, policy: Any, request: list[str] | None, *, variables: bool = True) -> None:
    context = dict(VARIABLES)
    if request is not None:
        context["custom:key"] = request
    expected = _reference(operator, "Custom:Key", policy, context, variables=variables)
    got = evaluate_operator(operator, "Custom:Key", policy, context, variables=variables)
    assert got is expected, (operator, policy, request, variables)


VARIABLES = {
    "aws:username": ["alice"],
    "aws:principaltag/team": ["Red"],
    "aws:principaltag/odd": ["a*b?"],
    "aws:principalaccount": ["111122223333"],
    "aws:tagkeys": ["env", "team"],  # multivalued: never substituted
}

# --- the table ---------------------------------------------------------------------------------------

# Per family: policy value lists, and request value lists, crossed with every operator of the family.
STRINGS = (
    ["prod"],
    ["prod", "dev"],
    ["PROD"],
    ["prod-*"],
    ["*"],
    ["**"],
    [""],
    ["p?od", "*-eu"],
    ["*a*a*a*b"],
    ["a*", "b*", "*c", "?", "x?z", "pr*d"],
    ["${aws:username}", "admin"],
    ["${aws:username}-*"],
    ["${aws:PrincipalTag/team}"],
    ["${aws:PrincipalTag/odd}"],  # substituted text is literal: "a*b?" only
    ["${aws:PrincipalTag/missing}"],
    ["${aws:PrincipalTag/missing}", "dev"],
    ["${aws:PrincipalTag/missing, 'prod'}"],
    ["${aws:TagKeys}"],
    ["${*}", "${?}x", "$${$}"],
    ["Straße", "İstanbul"],
    ["line1*"],
    [True, "false"],
    [10],
)
STRING_REQUESTS = (
    ["prod"],
    ["Prod"],
    ["dev"],
    ["prod", "dev"],
    ["prod-eu", "prod-us"],
    ["prod-eu", "qa"],
    [""],
    ["", "x"],
    ["alice"],
    ["alice-1"],
    ["Red", "red"],
    ["a*b?"],
    ["aXbY"],
    ["*", "?x", "$$"],
    ["STRASSE", "straße", "i̇stanbul", "istanbul"],
    ["STRASSE"],  # "Straße" in IgnoreCase: lower-cased, not case-folded
    ["İSTANBUL"],
    ["line1\nline2"],
    ["aaaaaaaaaab", "aaaaaaaaaa"],
    ["true", "FALSE", " true "],
    ["10", "10.0"],
)
ARNS = (
    ["arn:aws:iam::111122223333:root"],
    ["arn:aws:iam::*:role/app-*"],
    ["arn:aws:iam::111122223333:user/${aws:username}"],
    ["arn:aws:iam::*:user/${aws:username}*", "arn:aws:s3:::bucket/*"],
    ["arn:aws:*:*:*:*"],
    ["*"],  # fewer than six components: matches nothing
    ["arn:aws:iam::1:root", "arn:aws:iam::111122223333:root"],
    ["arn:aws:kms:*:111122223333:key/*", "arn:aws:kms:us-east-1:*:alias/a:b*"],
    ["arn:*"],
)
ARN_REQUESTS = (
    ["arn:aws:iam::111122223333:root"],
    ["arn:aws:iam::111122223333:role/app-x"],
    ["arn:aws:iam::111122223333:user/app-x", "arn:aws:iam::111122223333:role/app-"],
    ["arn:aws:iam::111122223333:user/alice"],
    ["arn:aws:iam::111122223333:user/alice2", "arn:aws:s3:::bucket/a/b:c"],
    ["arn:aws:kms:us-east-1:111122223333:key/k", "arn:aws:kms:us-east-1:9:alias/a:b:c"],
    ["arn:aws:kms:us:east-1:111122223333:key/k"],  # a colon too many early on
    ["not-an-arn"],
    ["arn:aws:iam::111122223333"],
    [""],
)
NUMBERS = (["10"], ["10", "20"], ["1.5", "abc", "-3"], ["abc"], [10], ["9007199254740993"], [".5", "0"])
NUMBER_REQUESTS = (
    ["10"],
    ["10.00"],
    ["20", "30"],
    ["-3", "1e1"],
    ["abc"],
    ["9007199254740992", "9007199254740993"],
    ["0.5", "-0", "0"],
    [" 10 ", "+10"],
)
DATES = (
    ["2024-01-01T00:00:00Z"],
    ["2024-01-01T00:00:00Z", "2023-06-01"],
    ["1704067200", "not a date"],
    ["2024-01-01T02:00:00+02:00"],
    ["2024"],
    ["*"],
)
DATE_REQUESTS = (
    ["2024-01-01T00:00:00Z"],
    ["2023-12-31T23:59:59Z", "2024-06-01"],
    ["1704067200"],
    ["not a date"],
    ["1970-01-01T00:33:44Z", "2024-01-01T00:00:00.000Z"],
    ["2030-01-01", "1999-01-01"],
)
NETWORKS = (
    ["10.0.0.0/8"],
    ["10.0.0.0/8", "192.0.2.0/24", "203.0.113.7"],
    ["203.0.113.7/24", "2001:DB8:1234:5678::/64"],
    ["::/0"],
    ["0.0.0.0/0", "::ffff:0:0/96"],
    ["not-a-cidr", "192.0.2.0/24"],
    ["10.1.2.3/32", "10.1.2.0/31", "10.0.0.0/9"],
)
NETWORK_REQUESTS = (
    ["10.0.0.1"],
    ["192.0.2.1", "198.51.100.1"],
    ["203.0.113.200"],
    ["2001:db8:1234:5678:ffff::1", "2001:db8:1234:5679::1"],
    ["::ffff:192.0.2.1"],
    ["not-an-ip", "10.1.2.1"],
    ["10.128.0.1", "10.127.255.255"],
)
BINARIES = (["aGk="], ["QmluYXJ5", "aGk="], ["not base64!"], ["aGk", "eA=="])
BINARY_REQUESTS = (["aGk="], ["hi"], ["x", "eA=="], ["not base64!"], ["aGk"])
BOOLS = (["true"], ["false"], [True], ["${aws:username}"], [" TRUE "], ["true", "false"])
BOOL_REQUESTS = (["true"], ["TRUE", "false"], ["alice"], ["yes"], [" true"])

FAMILIES: list[tuple[list[str], tuple[list[Any], ...], tuple[list[str], ...]]] = [
    ([o for o in OPERATORS if o.startswith("String")], STRINGS, STRING_REQUESTS),
    ([o for o in OPERATORS if o.startswith("Arn")], ARNS, ARN_REQUESTS),
    ([o for o in OPERATORS if o.startswith("Numeric")], NUMBERS, NUMBER_REQUESTS),
    ([o for o in OPERATORS if o.startswith("Date")], DATES, DATE_REQUESTS),
    (["IpAddress", "NotIpAddress"], NETWORKS, NETWORK_REQUESTS),
    (["BinaryEquals"], BINARIES, BINARY_REQUESTS),
    (["Bool"], BOOLS, BOOL_REQUESTS),
]
QUALIFIED = [
    "{}",
    "{}IfExists",
    "ForAnyValue:{}",
    "ForAllValues:{}",
    "ForAnyValue:{}IfExists",
    "ForAllValues:{}IfExists",
]


def _family_cases() -> list[tuple[str, list[str], tuple[list[Any], ...], tuple[list[str], ...]]]:
    return [
        (operator, qualified, policies, requests)
        for operators, policies, requests in FAMILIES
        for operator in operators
        for qualified in [[q.format(operator) for q in QUALIFIED]]
    ]


@pytest.mark.parametrize(
    ("operator", "qualified", "policies", "requests"),
    _family_cases(),
    ids=[case[0] for case in _family_cases()],
)
def test_every_operator_answers_as_the_definition(
    operator: str, qualified: list[str], policies: tuple[list[Any], ...], requests: tuple[list[str], ...]
) -> None:
    """Every qualifier and IfExists form, every policy value list, every request value list (and the
    key missing, and an empty set), with and without policy variables."""
    for name, policy, request, variables in itertools.product(
        qualified, policies, (*requests, [], None), (True, False)
    ):
        _check(name, policy, request, variables=variables)
        _check(name, policy[0] if len(policy) == 1 else policy, request, variables=variables)


def test_condition_keys_are_case_insensitive_and_values_case_sensitive() -> None:
    context = {"kms:encryptioncontextkeys": ["Tenant", "purpose"]}
    assert (
        evaluate_operator("ForAnyValue:StringLike", "kms:EncryptionContextKeys", ["tenant*"], context)
        is False
    )
    assert evaluate_operator("ForAnyValue:StringLike", "KMS:encryptioncontextkeys", ["Ten*"], context) is True
    assert (
        evaluate_operator("ForAllValues:StringEquals", "kms:EncryptionContextKeys", ["Tenant"], context)
        is False
    )
    assert (
        evaluate_operator(
            "ForAllValues:StringEqualsIgnoreCase", "kms:EncryptionContextKeys", ["TENANT", "Purpose"], context
        )
        is True
    )


def test_a_condition_block_ands_its_entries() -> None:
    context = {"kms:encryptioncontextkeys": ["k1", "k2"], "aws:sourceip": ["10.0.0.1"]}
    block = {
        "ForAllValues:StringLike": {"kms:EncryptionContextKeys": ["k*"]},
        "IpAddress": {"aws:SourceIp": ["10.0.0.0/8"]},
    }
    assert conditions_hold(block, context)
    assert not conditions_hold({**block, "NumericLessThan": {"kms:EncryptionContextKeys": "5"}}, context)


# --- generated cases ---------------------------------------------------------------------------------

_PATTERN = st.text(alphabet="ab*?:", max_size=10) | st.sampled_from(
    ["${aws:username}*", "a${aws:PrincipalTag/odd}", "${aws:PrincipalTag/missing}", "${?}", "*${*}"]
)
_VALUE = st.text(alphabet="abAB:*?", max_size=10) | st.sampled_from(["alice", "a*b?", "aa:b", ""])


@settings(max_examples=600, deadline=None)
@given(
    operator=st.sampled_from([o for o in OPERATORS if o.startswith(("String", "Arn"))]),
    qualifier=st.sampled_from(QUALIFIED),
    policy=st.lists(_PATTERN, min_size=1, max_size=6),
    request=st.lists(_VALUE, max_size=5) | st.none(),
    variables=st.booleans(),
)
def test_generated_string_conditions_answer_as_the_definition(
    operator: str, qualifier: str, policy: list[str], request: list[str] | None, variables: bool
) -> None:
    if operator.startswith("Arn"):  # six components, so that the components' wildcards are exercised
        policy = [f"{p}:x:{p}::{p}:{p}" for p in policy]
        request = None if request is None else [f"{v}:x:{v}::{v}:{v}" for v in request]
    _check(qualifier.format(operator), policy, request, variables=variables)


@settings(max_examples=300, deadline=None)
@given(
    operator=st.sampled_from([o for o in OPERATORS if o.startswith("Numeric")]),
    qualifier=st.sampled_from(QUALIFIED),
    policy=st.lists(
        st.integers(-5, 5).map(str) | st.sampled_from(["1.5", "x", "-0", "+2"]), min_size=1, max_size=5
    ),
    request=st.lists(st.integers(-6, 6).map(str) | st.sampled_from(["1.50", "y", "0.0"]), max_size=5),
)
def test_generated_numeric_conditions_answer_as_the_definition(
    operator: str, qualifier: str, policy: list[str], request: list[str]
) -> None:
    _check(qualifier.format(operator), policy, request)


# --- conditions that fill several alternations ------------------------------------------------------


def _large_patterns() -> list[str]:
    """Over a thousand patterns: literal ones, ones led by each of a few characters, ones led by a
    wildcard, duplicates; more than one alternation's worth in several groups."""
    patterns = []
    for i in range(300):
        patterns += [f"k{i}", f"k{i}*z?", f"q{i % 7}*{i}", f"*x{i}", f"?{i}?", f"*a*a*a*{i}b"]
    return [*patterns, "k1*z?", "q0*0"]


def _large_values() -> list[str]:
    values = [f"k{i}" for i in range(0, 600, 7)] + [f"k{i}-az" for i in range(0, 600, 11)]
    values += [f"q{i % 7}-{i}" for i in range(0, 600, 13)] + [f"yyx{i}" for i in range(0, 400, 17)]
    values += [f"z{i}!" for i in range(0, 400, 19)] + ["a" * 40 + "7b", "a" * 40, "", "x", "k", "q"]
    return values


@pytest.mark.parametrize("operator", ["StringLike", "StringNotLike"])
def test_large_conditions_answer_value_by_value_as_the_definition(operator: str) -> None:
    patterns = _large_patterns()
    parsed = [((p, False),) for p in patterns]
    hits = 0
    for value in _large_values():
        expected = any(_like(p, value) for p in parsed)
        hits += expected
        got = evaluate_operator(operator, "custom:key", patterns, {"custom:key": [value]})
        assert got is (expected != (operator == "StringNotLike")), value
    assert 0 < hits < len(_large_values())


def test_large_arn_conditions_answer_as_the_definition() -> None:
    patterns = [f"arn:aws:iam::{i:012d}:role/app-{i}*" for i in range(400)]
    patterns += [f"arn:aws:kms:*:{i:012d}:key/*" for i in range(300)] + ["arn:aws:s3:::b/*", "nope:*"]
    values = [f"arn:aws:iam::{i:012d}:role/app-{i}x" for i in range(0, 400, 9)]
    values += [f"arn:aws:iam::{i:012d}:role/db" for i in range(0, 400, 31)]
    values += [f"arn:aws:kms:eu-west-1:{i:012d}:key/k" for i in range(250, 350, 7)]
    values += ["arn:aws:s3:::b/c:d", "nope:x", "arn:aws:kms:eu:west:000000000001:key/k"]
    parsed = [((p, False),) for p in patterns]
    for value in values:
        expected = any(_arn(p, value) for p in parsed)
        got = evaluate_operator("ArnLike", "custom:arn", patterns, {"custom:arn": [value]})
        assert got is expected, value


def test_the_finding_shape_answers_both_ways() -> None:
    """2500 patterns against 7400 encryption-context keys: none matches, then one does."""
    patterns = [f"q{i}*z?" for i in range(2500)]
    keys = [f"k{i}" for i in range(7400)]
    condition = {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": patterns}}
    assert not conditions_hold(condition, {"kms:encryptioncontextkeys": keys})
    assert conditions_hold(condition, {"kms:encryptioncontextkeys": [*keys, "q2499-xz1"]})
    assert not conditions_hold(condition, {"kms:encryptioncontextkeys": [*keys, "q2499-xz"]})
    every = {"ForAllValues:StringLike": {"kms:EncryptionContextKeys": patterns}}
    assert conditions_hold(every, {"kms:encryptioncontextkeys": [f"q{i}zz" for i in range(2500)]})
    assert not conditions_hold(every, {"kms:encryptioncontextkeys": [f"q{i}zz" for i in range(2500)] + ["k"]})


def test_many_wildcards_in_many_patterns_against_long_values_end() -> None:
    """The alternation keeps each pattern's linear-time regex: ``*a*a*a…*b`` patterns, together,
    against values of thousands of ``a`` (the naive translation backtracked exponentially)."""
    patterns = ["*a" * stars + "*b" for stars in range(1, 200)] + [f"*a*{i}*b" for i in range(300)]
    values = ["a" * 3000, "a" * 2999 + "c"]
    assert not evaluate_operator("ForAnyValue:StringLike", "custom:key", patterns, {"custom:key": values})
    assert evaluate_operator(
        "ForAnyValue:StringLike", "custom:key", patterns, {"custom:key": [*values, "a" * 3000 + "b"]}
    )
    arns = [f"arn:aws:{'*a' * stars}*b:*:*:*" for stars in range(1, 100)]
    value = f"arn:aws:{'a' * 2000}:r:1:x"
    assert not evaluate_operator("ArnLike", "custom:arn", arns, {"custom:arn": [value]})


def test_set_and_bound_operators_over_thousands_of_values() -> None:
    numbers = [str(i) for i in range(0, 5000, 2)]
    context = {"custom:n": [str(i) for i in range(1, 5000, 2)] + ["4998.0"]}
    assert evaluate_operator("ForAnyValue:NumericEquals", "custom:n", numbers, context)
    assert not evaluate_operator(
        "ForAnyValue:NumericEquals", "custom:n", numbers, {"custom:n": context["custom:n"][:-1]}
    )
    assert evaluate_operator("ForAllValues:NumericLessThan", "custom:n", numbers, {"custom:n": ["4997.9"]})
    assert not evaluate_operator("ForAllValues:NumericLessThan", "custom:n", numbers, {"custom:n": ["4998"]})
    networks = [f"10.{i // 256}.{i % 256}.0/24" for i in range(3000)] + ["192.0.2.0/28"]
    assert evaluate_operator("IpAddress", "aws:SourceIp", networks, {"aws:sourceip": ["10.11.183.9"]})
    assert not evaluate_operator("IpAddress", "aws:SourceIp", networks, {"aws:sourceip": ["10.11.184.9"]})
    assert evaluate_operator("IpAddress", "aws:SourceIp", networks, {"aws:sourceip": ["192.0.2.15"]})
    assert not evaluate_operator("IpAddress", "aws:SourceIp", networks, {"aws:sourceip": ["192.0.2.16"]})


# --- the event loop's budget -------------------------------------------------------------------------


def _lead_star(count: int) -> dict[str, Any]:
    """Patterns that start with a wildcard: every request value must be tried against every one."""
    return {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": [f"*q{i}*" for i in range(count)]}}


def test_costly_conditions_move_off_the_event_loop_and_answer_the_same_there() -> None:
    condition = _lead_star(2500)
    context = {"kms:encryptioncontextkeys": [f"k{i}" for i in range(7400)]}
    with on_the_loop(), pytest.raises(WouldBlock):
        conditions_hold(condition, context)
    assert not conditions_hold(condition, context)  # on a request thread: the whole answer
    context = {"kms:encryptioncontextkeys": [f"k{i}" for i in range(7400)] + ["xq2499x"]}
    assert conditions_hold(condition, context)


def test_the_budget_spans_every_condition_of_one_authorisation() -> None:
    """Patterns spread over many statements add up; a new request context starts afresh."""
    blocks = [_lead_star(12) for _ in range(60)]
    context = {"kms:encryptioncontextkeys": [f"k{i}" for i in range(3000)]}
    with on_the_loop(), pytest.raises(WouldBlock):
        for block in blocks:
            conditions_hold(block, context)
    with on_the_loop():
        conditions_hold(blocks[0], dict(context))  # one of them alone fits


def test_cheap_conditions_stay_on_the_event_loop() -> None:
    """The finding's shape costs one set look-up and one dict look-up per request value: no pattern
    starts with a request value's first character."""
    finding = {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": [f"q{i}*z?" for i in range(2500)]}}
    equal = {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": [f"q{i}" for i in range(2500)]}}
    keys = [f"k{i}" for i in range(7400)]
    conditions_hold(finding, {"kms:encryptioncontextkeys": ["warm"]})  # prepared once, off the loop
    conditions_hold(equal, {"kms:encryptioncontextkeys": ["warm"]})
    with on_the_loop():
        assert not conditions_hold(finding, {"kms:encryptioncontextkeys": keys})
        assert not conditions_hold(equal, {"kms:encryptioncontextkeys": keys})
        assert conditions_hold(equal, {"kms:encryptioncontextkeys": [*keys, "q7"]})


def test_a_large_condition_is_prepared_once() -> None:
    """Preparing (and compiling) thousands of patterns is costly: the first use may move off the
    loop, later uses with a few request values stay on it."""
    condition = _lead_star(3000)
    with on_the_loop(), pytest.raises(WouldBlock):
        conditions_hold(condition, {"kms:encryptioncontextkeys": ["k1"]})
    assert not conditions_hold(condition, {"kms:encryptioncontextkeys": ["k1"]})
    with on_the_loop():
        assert not conditions_hold(condition, {"kms:encryptioncontextkeys": ["k1", "k2"]})
        assert conditions_hold(condition, {"kms:encryptioncontextkeys": ["k1", "q2999"]})
