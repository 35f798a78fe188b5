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
- Policy variables are substituted in String, ARN and Bool values only. A value whose variable has no
  value is null (IAM User Guide, "Policy variables with no value"): no request value equals or matches
  it, so the key's other values decide, and when none is left the request's values match nothing. A
  positive operator then does not hold; a negated one (``StringNotEquals``, ``StringNotLike``,
  ``ArnNotLike`` ..., with or without ``ForAllValues``/``ForAnyValue``) holds, "as the value of the
  condition key ... is not equal to or like the effectively null value" -- so a Deny with
  ``StringNotEquals {"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}`` applies to a caller without
  the tag. A missing key is decided by the rules above, as for any values (so ``ForAnyValue`` with a
  negated operator is still false on a missing key: there is no request value to differ from null).

Cost: a condition's policy values are prepared once (cached on the operator and the values, which a
parsed policy never changes), so that matching a request's values costs about one step each, not
one per policy value: the String, Bool, Binary and Numeric/Date equality operators look a request
value up in a set of the policy's values; the other Numeric and Date operators compare it with the
largest or smallest policy value; IpAddress looks its network up once per prefix length; and the
wildcard operators (StringLike, Arn*) look it up in the set of literal patterns, then match it in
one call into the regex engine against an alternation of the patterns that begin with its first
character or with a wildcard (at most ``_CHUNK`` patterns a call). Values that name policy
variables depend on the request: they are prepared per request (cached on their substituted form).
A KMS encryption context of thousands of keys against a key policy of thousands of patterns once
took 18.5 million regex calls, seconds on the worker's event loop; wildcard patterns can still make a
pathological pair cost request values times patterns (inside the engine), so what an authorisation
spends on conditions is counted, and past ``_LOOP_BUDGET`` (about 10 ms) a call tried on the event
loop moves to a request thread (khoa.blocking), where it runs to the same answer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import operator as op
import re
import threading
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from khoa.access.matching import Pieces, has_wildcard, lead, pieces, regex_source, union
from khoa.blocking import refuse_on_the_loop

Charge = Callable[[int], None]

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


def _decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- policy values, prepared --------------------------------------------------------------------------

# What matching costs, in units of about 50 ns (measured with Python 3.11): a request value looked up
# in a set or compared with a bound; one call into the regex engine; one pattern of an alternation
# tried against (up to 32 characters of) a value; preparing one policy value, and each character of
# a pattern; compiling each character of an alternation.
_PER_VALUE = 3
_PER_CALL = 10
_PER_PATTERN = 1
_PREPARE = 10
_PREPARE_CHARACTER = 15
_COMPILE_CHARACTER = 25
# What an authorisation may spend on conditions on the event loop before it moves to a thread.
_LOOP_BUDGET = 200_000
# Patterns per alternation: one call into the regex engine, which holds the GIL throughout.
_CHUNK = 128
# Prepared values kept, counted in characters of policy values; a full cache is emptied.
_CACHE_CHARACTERS = 1_000_000


class _Budget:
    """What one authorisation (told by its request context) has spent on conditions."""

    __slots__ = ("context", "units")

    def __init__(self, context: dict[str, list[str]]) -> None:
        self.context = context  # held, so that no other context can take its identity meanwhile
        self.units = 0

    def charge(self, units: int) -> None:
        """Count ``units``; past the budget, a call tried on the event loop stops here
        (khoa.blocking.WouldBlock) and runs again, from the start, on a request thread."""
        self.units += units
        if self.units > _LOOP_BUDGET:
            refuse_on_the_loop("policy conditions over many values")


class _Spent(threading.local):
    budget: _Budget | None = None


_SPENT = _Spent()


def _budget(context: dict[str, list[str]]) -> _Budget:
    """The budget of the authorisation under way on this thread: the one of its request context."""
    budget = _SPENT.budget
    if budget is None or budget.context is not context:
        budget = _SPENT.budget = _Budget(context)
    return budget


class _Values:
    """A condition's policy values, prepared to match request values."""

    __slots__ = ()

    def match(self, value: str, charge: Charge) -> bool:
        raise NotImplementedError


class _Set(_Values):
    """A request value matches when its ``key`` (None: it cannot match) is one of ``members``."""

    __slots__ = ("key", "members")

    def __init__(self, members: Iterable[Hashable], key: Callable[[str], Hashable | None]) -> None:
        self.members = frozenset(members)
        self.key = key

    def match(self, value: str, charge: Charge) -> bool:
        if not self.members:
            return False
        found = self.key(value)
        return found is not None and found in self.members


class _Bound(_Values):
    """``relation(value, e)`` for some policy value e, for an order relation: against the one bound
    that decides (the largest policy value for ``<``, ``<=``; the smallest for ``>``, ``>=``)."""

    __slots__ = ("bound", "key", "relation")

    def __init__(self, bound: Any, relation: Callable[[Any, Any], bool], key: Callable[[str], Any]) -> None:
        self.bound = bound
        self.relation = relation
        self.key = key

    def match(self, value: str, charge: Charge) -> bool:
        found = self.key(value)
        return found is not None and bool(self.relation(found, self.bound))


class _Networks(_Values):
    """IpAddress: per IP version and prefix length, the networks' addresses shifted past the host bits,
    so that an address is looked up once per prefix length the policy uses."""

    __slots__ = ("by_version",)

    def __init__(self, texts: Iterable[str]) -> None:
        shifted: dict[int, dict[int, set[int]]] = {}
        for text in texts:
            network = _network(text)
            if network is not None:
                shift = network.max_prefixlen - network.prefixlen
                shifted.setdefault(network.version, {}).setdefault(shift, set()).add(
                    int(network.network_address) >> shift
                )
        self.by_version = {
            version: tuple((shift, frozenset(nets)) for shift, nets in by_shift.items())
            for version, by_shift in shifted.items()
        }

    def match(self, value: str, charge: Charge) -> bool:
        address = ip_address(value)
        if address is None:
            return False
        number = int(address)
        return any(number >> shift in nets for shift, nets in self.by_version.get(address.version, ()))


class _Chunk:
    """Up to ``_CHUNK`` patterns as one alternation, compiled when first needed."""

    __slots__ = ("regex", "sources")

    def __init__(self, sources: tuple[str, ...]) -> None:
        self.sources = sources
        self.regex: re.Pattern[str] | None = None

    def compiled(self, charge: Charge) -> re.Pattern[str]:
        if self.regex is None:
            charge(sum(len(source) for source in self.sources) * _COMPILE_CHARACTER)
            self.regex = union(self.sources)
        return self.regex


def _chunks(sources: Iterable[str]) -> tuple[_Chunk, ...]:
    unique = tuple(dict.fromkeys(sources))
    return tuple(_Chunk(unique[i : i + _CHUNK]) for i in range(0, len(unique), _CHUNK))


class _Patterns(_Values):
    """StringLike and the Arn operators: literal patterns in a set; the others in alternations,
    grouped by the character every value they match starts with (those that start with a wildcard
    in every group), so that a request value is tried only against patterns that can match it."""

    __slots__ = ("arn", "by_lead", "everything", "exact", "wild")

    def __init__(self, patterns: Iterable[Pieces], *, arn: bool) -> None:
        self.arn = arn
        self.everything = False
        exact: set[str] = set()
        groups: dict[str, list[str]] = {}
        wild: list[str] = []
        for parts in patterns:
            text = _text(parts)
            if arn and text.count(":") < 5:
                continue  # an ARN pattern without its six components matches nothing
            if not has_wildcard(parts):
                exact.add(text)
            elif not arn and all(not literal and not piece.strip("*") for piece, literal in parts):
                self.everything = True  # "*"
            else:
                first = lead(parts)
                (groups.setdefault(first, []) if first else wild).append(regex_source(parts, arn=arn))
        self.exact = frozenset(exact)
        # (alternations to try, how many patterns they hold) by a value's first character
        self.wild = _tried(_chunks(wild))
        self.by_lead = {first: _tried(_chunks(sources) + self.wild[0]) for first, sources in groups.items()}

    def match(self, value: str, charge: Charge) -> bool:
        if self.everything:
            return True
        if self.arn and value.count(":") < 5:
            return False
        if value in self.exact:
            return True
        chunks, size = self.by_lead.get(value[:1], self.wild)
        if not chunks:
            return False
        charge(len(chunks) * _PER_CALL + size * _PER_PATTERN * (1 + len(value) // 32))
        if len(chunks) == 1:
            return chunks[0].compiled(charge).fullmatch(value) is not None
        return any(chunk.compiled(charge).fullmatch(value) is not None for chunk in chunks)


def _tried(chunks: tuple[_Chunk, ...]) -> tuple[tuple[_Chunk, ...], int]:
    return chunks, sum(len(chunk.sources) for chunk in chunks)


def _same(value: str) -> str:
    return value


def _lower(value: str) -> str:
    return value.lower()


def _bool_key(value: str) -> str:
    return value.strip().lower()


def _binary_key(value: str) -> bytes:
    """A base64 request value is compared decoded; any other, as its bytes."""
    decoded = _decode(value)
    return decoded if decoded is not None else value.encode()


_RELATIONS: dict[str, tuple[Callable[[Any, Any], bool], Callable[[Iterable[Any]], Any]]] = {
    "<": (op.lt, max),
    "<=": (op.le, max),
    ">": (op.gt, min),
    ">=": (op.ge, min),
}
_PARSERS: dict[str, Callable[[str], Any]] = {"number": _number, "date": parse_date}


def _prepare(kind: str, relation: str, patterns: tuple[Pieces, ...]) -> _Values:
    """The policy values (substituted) of one condition entry, prepared for matching."""
    texts = [_text(parts) for parts in patterns]
    if kind == "equals":
        return _Set(texts, _same)
    if kind == "equals-ignore-case":
        return _Set((text.lower() for text in texts), _lower)
    if kind == "bool":
        return _Set((text.strip().lower() for text in texts), _bool_key)
    if kind == "binary":
        return _Set((wanted for text in texts if (wanted := _decode(text)) is not None), _binary_key)
    if kind == "ip":
        return _Networks(texts)
    if kind in ("like", "arn"):
        return _Patterns(patterns, arn=kind == "arn")
    parse = _PARSERS[kind]
    parsed = [value for text in texts if (value := parse(text)) is not None]
    if relation == "=":
        return _Set(parsed, parse)  # Decimal and aware datetime hash as they compare
    if not parsed:
        return _Set((), parse)
    compare, decisive = _RELATIONS[relation]
    return _Bound(decisive(parsed), compare, parse)


class _Prepared:
    """Prepared values by (operator kind, values); emptied when they exceed ``_CACHE_CHARACTERS`` of
    policy values (compiled alternations are a few dozen bytes a character)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, tuple[Any, ...]], _Values] = {}
        self._characters = 0

    def get(self, kind: str, relation: str, values: tuple[Any, ...], charge: Charge) -> _Values:
        key = (kind, relation, values)
        found = self._entries.get(key)
        if found is not None:
            return found
        patterns = tuple(((v, False),) if isinstance(v, str) else v for v in values)
        characters = sum(len(_text(parts)) for parts in patterns)
        per_character = _PREPARE_CHARACTER if kind in ("like", "arn", "ip") else 0
        charge(len(patterns) * _PREPARE + characters * per_character)
        found = _prepare(kind, relation, patterns)
        characters += len(patterns)
        if characters > _CACHE_CHARACTERS // 100 and not isinstance(values[0], str):
            return found  # large and substituted (from the request, perhaps): used once, not kept
        if self._characters + characters > _CACHE_CHARACTERS:
            self._entries.clear()
            self._characters = 0
        self._entries[key] = found
        self._characters += characters
        return found


_PREPARED = _Prepared()

# operator → (kind of comparison, order relation for Numeric/Date, negated, takes policy variables)
_OPERATORS: dict[str, tuple[str, str, bool, bool]] = {
    "StringEquals": ("equals", "", False, True),
    "StringNotEquals": ("equals", "", True, True),
    "StringEqualsIgnoreCase": ("equals-ignore-case", "", False, True),
    "StringNotEqualsIgnoreCase": ("equals-ignore-case", "", True, True),
    "StringLike": ("like", "", False, True),
    "StringNotLike": ("like", "", True, True),
    "NumericEquals": ("number", "=", False, False),
    "NumericNotEquals": ("number", "=", True, False),
    "NumericLessThan": ("number", "<", False, False),
    "NumericLessThanEquals": ("number", "<=", False, False),
    "NumericGreaterThan": ("number", ">", False, False),
    "NumericGreaterThanEquals": ("number", ">=", False, False),
    "DateEquals": ("date", "=", False, False),
    "DateNotEquals": ("date", "=", True, False),
    "DateLessThan": ("date", "<", False, False),
    "DateLessThanEquals": ("date", "<=", False, False),
    "DateGreaterThan": ("date", ">", False, False),
    "DateGreaterThanEquals": ("date", ">=", False, False),
    "Bool": ("bool", "", False, True),
    "BinaryEquals": ("binary", "", False, False),
    "IpAddress": ("ip", "", False, False),
    "NotIpAddress": ("ip", "", True, False),
    "ArnEquals": ("arn", "", False, True),
    "ArnLike": ("arn", "", False, True),
    "ArnNotEquals": ("arn", "", True, True),
    "ArnNotLike": ("arn", "", True, True),
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
    kind, relation, negated, takes_variables = _OPERATORS[base]
    raw = _as_list(policy_values)
    # Values without policy variables are prepared once per policy; the others once they are substituted.
    substituted: tuple[Pieces, ...] = ()
    if not (variables and takes_variables) or "${" not in "".join(raw):
        fixed = tuple(raw)
    else:
        fixed = tuple(value for value in raw if "${" not in value)
        resolved = (pieces(value, context) for value in raw if "${" in value)
        substituted = tuple(parts for parts in resolved if parts is not None)
    if not actual:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated
    if not fixed and not substituted:
        # Every value names a variable without a value: null values, which no request value equals or
        # matches. Each request value matches none of them, so a negated operator holds (with any
        # qualifier: every request value, and so some, is unmatched) and a positive one does not.
        return negated

    charge = _budget(context).charge
    charge(len(actual) * _PER_VALUE)
    if not substituted or not fixed:
        match = _PREPARED.get(kind, relation, fixed or substituted, charge).match

        def matches(value: str) -> bool:
            return match(value, charge)

    else:
        prepared = [_PREPARED.get(kind, relation, values, charge) for values in (fixed, substituted)]

        def matches(value: str) -> bool:
            return any(values.match(value, charge) for values in prepared)

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
