"""Condition operators: String*, Numeric*, Date*, Bool, BinaryEquals, IpAddress, Arn*, Null, with
``...IfExists`` and the ``ForAnyValue:`` / ``ForAllValues:`` set qualifiers.

Missing keys follow AWS: a positive operator is false, a negated operator (``...Not...``) is true,
``IfExists`` makes any operator true, ``ForAllValues`` is true and ``ForAnyValue`` false.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from khoa.iam.matching import substitute, wildcard_match

Comparator = Callable[[str, str], bool]


class UnknownOperator(ValueError):
    """The policy names a condition operator IAM does not have."""


def _date(value: str) -> datetime | None:
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        return None


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _numeric(check: Callable[[float, float], bool]) -> Comparator:
    def compare(actual: str, expected: str) -> bool:
        a, e = _number(actual), _number(expected)
        return a is not None and e is not None and check(a, e)

    return compare


def _dated(check: Callable[[datetime, datetime], bool]) -> Comparator:
    def compare(actual: str, expected: str) -> bool:
        a, e = _date(actual), _date(expected)
        return a is not None and e is not None and check(a, e)

    return compare


def _ip(actual: str, expected: str) -> bool:
    try:
        return ipaddress.ip_address(actual) in ipaddress.ip_network(expected, strict=False)
    except ValueError:
        return False


def _binary(actual: str, expected: str) -> bool:
    try:
        return base64.b64decode(actual) == base64.b64decode(expected)
    except ValueError:
        return False


def _arn_like(actual: str, expected: str) -> bool:
    actual_parts = actual.split(":", 5)
    expected_parts = expected.split(":", 5)
    if len(actual_parts) != 6 or len(expected_parts) != 6:
        return False
    return all(wildcard_match(e, a) for a, e in zip(actual_parts, expected_parts, strict=True))


# operator → (comparator, negated)
_OPERATORS: dict[str, tuple[Comparator, bool]] = {
    "StringEquals": (lambda a, e: a == e, False),
    "StringNotEquals": (lambda a, e: a == e, True),
    "StringEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), True),
    "StringLike": (lambda a, e: wildcard_match(e, a), False),
    "StringNotLike": (lambda a, e: wildcard_match(e, a), True),
    "NumericEquals": (_numeric(lambda a, e: a == e), False),
    "NumericNotEquals": (_numeric(lambda a, e: a == e), True),
    "NumericLessThan": (_numeric(lambda a, e: a < e), False),
    "NumericLessThanEquals": (_numeric(lambda a, e: a <= e), False),
    "NumericGreaterThan": (_numeric(lambda a, e: a > e), False),
    "NumericGreaterThanEquals": (_numeric(lambda a, e: a >= e), False),
    "DateEquals": (_dated(lambda a, e: a == e), False),
    "DateNotEquals": (_dated(lambda a, e: a == e), True),
    "DateLessThan": (_dated(lambda a, e: a < e), False),
    "DateLessThanEquals": (_dated(lambda a, e: a <= e), False),
    "DateGreaterThan": (_dated(lambda a, e: a > e), False),
    "DateGreaterThanEquals": (_dated(lambda a, e: a >= e), False),
    "Bool": (lambda a, e: a.lower() == e.lower(), False),
    "BinaryEquals": (_binary, False),
    "IpAddress": (_ip, False),
    "NotIpAddress": (_ip, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
}


def known_operator(name: str) -> bool:
    base = name.split(":", 1)[1] if name.startswith(("ForAnyValue:", "ForAllValues:")) else name
    base = base[: -len("IfExists")] if base.endswith("IfExists") else base
    return base in _OPERATORS or base == "Null"


def _as_list(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def evaluate_operator(operator: str, key: str, policy_values: Any, context: dict[str, list[str]]) -> bool:
    """Does one ``operator: {key: values}`` entry hold for this request?"""
    qualifier = ""
    if operator.startswith(("ForAnyValue:", "ForAllValues:")):
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    expected = [v for v in (substitute(p, context) for p in _as_list(policy_values)) if v is not None]
    actual = context.get(key.lower())
    if base == "Null":
        wants_null = expected[0].lower() == "true" if expected else True
        return (not actual) == wants_null
    if base not in _OPERATORS:
        raise UnknownOperator(operator)
    compare, negated = _OPERATORS[base]
    if not actual:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated

    def matches(value: str) -> bool:
        return any(compare(value, e) for e in expected)

    if qualifier == "ForAllValues":
        return all(matches(v) for v in actual) if not negated else all(not matches(v) for v in actual)
    if negated:
        return not any(matches(v) for v in actual)
    return any(matches(v) for v in actual)


def conditions_hold(block: dict[str, Any] | None, context: dict[str, list[str]]) -> bool:
    if not block:
        return True
    for operator, entries in block.items():
        if not isinstance(entries, dict):
            return False
        for key, values in entries.items():
            if not evaluate_operator(operator, key, values, context):
                return False
    return True
