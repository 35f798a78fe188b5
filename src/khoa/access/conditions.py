"""Condition operators: String*, Numeric*, Date*, Bool, BinaryEquals, IpAddress, Arn*, Null, with
``...IfExists`` and the ``ForAnyValue:`` / ``ForAllValues:`` set qualifiers.

As IAM documents them:

- Several keys under one operator, and several operators, must all hold (AND); several values for one
  key are alternatives (OR), and for a negated operator (``...Not...``, ``NotIpAddress``) none may
  match (NOR).
- A key missing from the request: a positive operator is false, a negated one true; ``...IfExists``
  makes any operator true; ``ForAllValues`` is true and ``ForAnyValue`` false (also for an empty set).
  ``Null`` tests presence itself and cannot take ``IfExists``.
- ``ForAllValues``: every request value matches some policy value (negated: none does).
  ``ForAnyValue``: some request value matches some policy value (negated: some request value matches
  none of them).
- Policy variables are substituted in String, ARN and Bool values only; a value whose variable has no
  value can never match, and when no value of a key resolves the condition is false (IAM treats the
  statement as invalid).
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from khoa.access.matching import Pieces, match_pieces, pieces

Comparator = Callable[[str, Pieces], bool]

_QUALIFIERS = ("ForAnyValue:", "ForAllValues:")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_EPOCH = re.compile(r"^-?\d+(?:\.\d+)?$")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class UnknownOperator(ValueError):
    """The policy names a condition operator IAM does not have."""


def _text(expected: Pieces) -> str:
    return "".join(text for text, _ in expected)


@functools.lru_cache(maxsize=4096)
def parse_date(value: str) -> datetime | None:
    """A W3C ISO 8601 date/time (``2024-05``, ``2024-05-01T12:00Z`` ...) or epoch seconds.

    A bare number is epoch seconds, so the W3C year-only form (``2024``) reads as an epoch time.
    """
    value = value.strip()
    try:
        if _EPOCH.match(value):
            return datetime.fromtimestamp(float(value), UTC)
        year_month = _YEAR_MONTH.match(value)
        if year_month:
            return datetime(int(year_month.group(1)), int(year_month.group(2)), 1, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def _number(value: str) -> Decimal | None:
    value = value.strip()
    if not _NUMBER.match(value):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _numeric(check: Callable[[Decimal, Decimal], bool]) -> Comparator:
    def compare(actual: str, expected: Pieces) -> bool:
        a, e = _number(actual), _number(_text(expected))
        return a is not None and e is not None and check(a, e)

    return compare


def _dated(check: Callable[[datetime, datetime], bool]) -> Comparator:
    def compare(actual: str, expected: Pieces) -> bool:
        a, e = parse_date(actual), parse_date(_text(expected))
        return a is not None and e is not None and check(a, e)

    return compare


@functools.lru_cache(maxsize=4096)
def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address; an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is its IPv4 address."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


def _ip(actual: str, expected: Pieces) -> bool:
    address = ip_address(actual)
    network = _network(_text(expected))
    if address is None or network is None or address.version != network.version:
        return False
    return address in network


def _decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _binary(actual: str, expected: Pieces) -> bool:
    wanted = _decode(_text(expected))
    if wanted is None:
        return False
    got = _decode(actual)
    return got == wanted if got is not None else actual.encode() == wanted


def _string_like(actual: str, expected: Pieces) -> bool:
    return match_pieces(expected, actual)


def _arn_like(actual: str, expected: Pieces) -> bool:
    return match_pieces(expected, actual, arn=True)


def _equals(actual: str, expected: Pieces) -> bool:
    return actual == _text(expected)


def _equals_ignore_case(actual: str, expected: Pieces) -> bool:
    return actual.lower() == _text(expected).lower()


def _bool(actual: str, expected: Pieces) -> bool:
    return actual.strip().lower() == _text(expected).strip().lower()


# operator → (comparator, negated, takes policy variables)
_OPERATORS: dict[str, tuple[Comparator, bool, bool]] = {
    "StringEquals": (_equals, False, True),
    "StringNotEquals": (_equals, True, True),
    "StringEqualsIgnoreCase": (_equals_ignore_case, False, True),
    "StringNotEqualsIgnoreCase": (_equals_ignore_case, True, True),
    "StringLike": (_string_like, False, True),
    "StringNotLike": (_string_like, True, True),
    "NumericEquals": (_numeric(lambda a, e: a == e), False, False),
    "NumericNotEquals": (_numeric(lambda a, e: a == e), True, False),
    "NumericLessThan": (_numeric(lambda a, e: a < e), False, False),
    "NumericLessThanEquals": (_numeric(lambda a, e: a <= e), False, False),
    "NumericGreaterThan": (_numeric(lambda a, e: a > e), False, False),
    "NumericGreaterThanEquals": (_numeric(lambda a, e: a >= e), False, False),
    "DateEquals": (_dated(lambda a, e: a == e), False, False),
    "DateNotEquals": (_dated(lambda a, e: a == e), True, False),
    "DateLessThan": (_dated(lambda a, e: a < e), False, False),
    "DateLessThanEquals": (_dated(lambda a, e: a <= e), False, False),
    "DateGreaterThan": (_dated(lambda a, e: a > e), False, False),
    "DateGreaterThanEquals": (_dated(lambda a, e: a >= e), False, False),
    "Bool": (_bool, False, True),
    "BinaryEquals": (_binary, False, False),
    "IpAddress": (_ip, False, False),
    "NotIpAddress": (_ip, True, False),
    "ArnEquals": (_arn_like, False, True),
    "ArnLike": (_arn_like, False, True),
    "ArnNotEquals": (_arn_like, True, True),
    "ArnNotLike": (_arn_like, True, True),
}


def split_operator(name: str) -> tuple[str, str, bool]:
    """``ForAnyValue:StringLikeIfExists`` → (``ForAnyValue``, ``StringLike``, True)."""
    qualifier = ""
    if name.startswith(_QUALIFIERS):
        qualifier, name = name.split(":", 1)
    if_exists = name.endswith("IfExists")
    return qualifier, name[: -len("IfExists")] if if_exists else name, if_exists


def known_operator(name: str) -> bool:
    _qualifier, base, if_exists = split_operator(name)
    if base == "Null":
        return not if_exists  # IfExists can be added to any operator except Null
    return base in _OPERATORS


def _as_list(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def evaluate_operator(
    operator: str,
    key: str,
    policy_values: Any,
    context: dict[str, list[str]],
    *,
    variables: bool = True,
) -> bool:
    """Does one ``operator: {key: values}`` entry hold for this request?"""
    qualifier, base, if_exists = split_operator(operator)
    actual = context.get(key.lower())
    if base == "Null":
        absent = not actual
        return any((wanted.strip().lower() == "true") == absent for wanted in _as_list(policy_values))
    if base not in _OPERATORS:
        raise UnknownOperator(operator)
    compare, negated, takes_variables = _OPERATORS[base]
    raw = _as_list(policy_values)
    resolved = (pieces(value, context, variables=variables and takes_variables) for value in raw)
    expected = [p for p in resolved if p is not None]
    if raw and not expected:
        return False  # every value names a variable without a value: the statement cannot apply
    if not actual:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated

    def matches(value: str) -> bool:
        return any(compare(value, e) for e in expected)

    if qualifier == "ForAllValues":
        return all(not matches(v) for v in actual) if negated else all(matches(v) for v in actual)
    if qualifier == "ForAnyValue":
        return any(not matches(v) for v in actual) if negated else any(matches(v) for v in actual)
    if negated:
        return not any(matches(v) for v in actual)
    return any(matches(v) for v in actual)


def conditions_hold(
    block: dict[str, Any] | None, context: dict[str, list[str]], *, variables: bool = True
) -> bool:
    """Every operator, and every key under it, must hold."""
    if not block:
        return True
    for operator, entries in block.items():
        if not isinstance(entries, dict):
            return False
        for key, values in entries.items():
            if not evaluate_operator(operator, key, values, context, variables=variables):
                return False
    return True
