"""Is a resource policy public? Decided by what it grants, not by which condition keys it mentions.

Secrets Manager's ``BlockPublicPolicy`` refuses policies that grant broad access; AWS decides that with
Zelkova, which reasons about the set of callers a policy allows. Khoa does the same for the forms it
can bound exactly: an ``Allow`` statement is *public* when its principal is unbounded (``"*"``, any
``"*"`` value, or ``NotPrincipal``) and none of its conditions pins the caller to a bounded set.

A condition pins the caller only when, whatever the request, it can hold for a bounded set of callers:

- a positive, non-``IfExists``, unqualified operator (``ForAnyValue:``/``ForAllValues:`` are for
  multivalued keys; ``ForAllValues`` holds when the key is absent): ``StringEquals``,
  ``StringEqualsIgnoreCase``, ``StringLike``, ``ArnEquals``, ``ArnLike`` or ``IpAddress``;
- on a key that identifies the caller or its network (``aws:PrincipalAccount``, ``aws:PrincipalArn``,
  ``aws:PrincipalOrgID``, ``aws:PrincipalOrgPaths``, ``aws:SourceAccount``, ``aws:SourceArn``,
  ``aws:SourceOwner``, ``aws:SourceVpc``, ``aws:SourceVpce``, ``aws:SourceIp``, ``aws:VpcSourceIp``,
  ``aws:userid``);
- with every value bounded: no wildcard in an account ID, organisation or VPC value, none in the
  account field of an ARN, no policy variable (``${aws:PrincipalAccount}`` compares the caller with
  itself), and an IP range no wider than /8 (IPv4) or /32 (IPv6), the bounds S3 uses.

Negated operators (``StringNotEquals`` …), ``IfExists`` variants, ``Null``, ``Bool`` (such as
``aws:SecureTransport``) and keys that describe the request rather than the caller restrict nothing.
A public ``Allow`` is still not public when a ``Deny`` to everyone, for every action and resource,
holds exactly when the caller is outside a bounded set (``StringNotEquals aws:PrincipalAccount
111122223333``), which is the other way to write the same restriction.

Naming accounts, users, roles or services as principals is not public: cross-account access to a
named account is what ``BlockPublicPolicy`` still allows.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from khoa.access.conditions import split_operator
from khoa.access.policy import Policy, Statement

_ACCOUNT_KEYS = frozenset({"aws:principalaccount", "aws:sourceaccount", "aws:sourceowner"})
_LITERAL_KEYS = frozenset({"aws:principalorgid", "aws:sourcevpc", "aws:sourcevpce"})
_ARN_KEYS = frozenset({"aws:principalarn", "aws:sourcearn"})
_IP_KEYS = frozenset({"aws:sourceip", "aws:vpcsourceip"})
_PREFIX_KEYS = frozenset({"aws:principalorgpaths", "aws:userid"})
IDENTIFYING_KEYS = _ACCOUNT_KEYS | _LITERAL_KEYS | _ARN_KEYS | _IP_KEYS | _PREFIX_KEYS

_EQUALITY = frozenset({"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike"})
_NEGATED_EQUALITY = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NotIpAddress": "IpAddress",
}
_MIN_PREFIX = {4: 8, 6: 32}


def _wild(text: str) -> bool:
    return "*" in text or "?" in text or "${" in text


def _bounded_value(base: str, key: str, value: Any) -> bool:
    """Does one condition value, for this operator and key, admit only a bounded set of callers?"""
    if isinstance(value, bool):
        return False
    text = str(value).strip()
    if not text or "${" in text:
        return False
    if key in _IP_KEYS:
        if base != "IpAddress":
            return False
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return False  # matches nothing, but is not a restriction worth trusting
        return network.prefixlen >= _MIN_PREFIX[network.version]
    if base == "IpAddress":
        return False
    if key in _ACCOUNT_KEYS or key in _LITERAL_KEYS:
        return not _wild(text)
    if key in _ARN_KEYS:
        parts = text.split(":", 5)
        if len(parts) < 6:
            return False
        account = parts[4]
        if account:
            return not _wild(account) and not _wild(":".join(parts[:4]))
        return not _wild(text)  # an ARN without an account (S3 buckets): only a literal bounds it
    if key in _PREFIX_KEYS:
        # An organisation path "o-abc/r-1/*" or a user id "AROAEXAMPLE:*" is bounded by its literal
        # first segment; a value that starts with a wildcard is not.
        separator = "/" if key == "aws:principalorgpaths" else ":"
        head = text.split(separator, 1)[0]
        return bool(head) and not _wild(head) and (separator in text or not _wild(text))
    return False


def _values(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else [raw]


def _pins(operator: str, key: str, raw: Any, *, negated: bool = False) -> bool:
    """Does ``operator: {key: raw}`` (or, with ``negated``, its negation in a Deny) bound the caller?"""
    qualifier, base, if_exists = split_operator(operator)
    if qualifier:
        return False
    if negated:
        # Deny ... StringNotEquals {key: bounded}: denies everyone outside the bounded set. IfExists
        # would let a request without the key through, so it does not bound.
        if if_exists or base not in _NEGATED_EQUALITY:
            return False
        base = _NEGATED_EQUALITY[base]
    elif if_exists or (base not in _EQUALITY and base != "IpAddress"):
        return False
    key = key.lower()
    if key not in IDENTIFYING_KEYS:
        return False
    values = _values(raw)
    return bool(values) and all(_bounded_value(base, key, v) for v in values)


def _restricted(statement: Statement) -> bool:
    """Some condition of this Allow statement pins the caller to a bounded set."""
    return any(
        _pins(operator, key, raw)
        for operator, entries in statement.condition.items()
        for key, raw in entries.items()
    )


def _unbounded_principal(statement: Statement) -> bool:
    if statement.not_principals is not None:
        return True  # "everyone except ..." is public
    return any(value == "*" for _kind, value in statement.principals or ())


def _fencing_deny(statement: Statement) -> bool:
    """A Deny to everyone, for every action and resource, whose one condition holds exactly when the
    caller is outside a bounded set; together with any Allow it bounds who is allowed."""
    if statement.effect != "Deny" or statement.not_principals is not None:
        return False
    if not any(value == "*" for _kind, value in statement.principals or ()):
        return False
    if statement.actions != ("*",) or statement.not_actions:
        return False
    if statement.not_resources or any(r != "*" for r in statement.resources):
        return False
    entries = [(op, key, raw) for op, block in statement.condition.items() for key, raw in block.items()]
    return len(entries) == 1 and _pins(*entries[0], negated=True)


def public_statements(policy: Policy) -> list[Statement]:
    """The Allow statements that grant access to an unbounded set of callers."""
    if any(_fencing_deny(s) for s in policy.statements):
        return []
    return [
        s for s in policy.statements if s.effect == "Allow" and _unbounded_principal(s) and not _restricted(s)
    ]


def is_public(policy: Policy) -> bool:
    """Would AWS's BlockPublicPolicy refuse this policy?"""
    return bool(public_statements(policy))
