"""What a grant allows, and which grants a grant may create: the pure rules, no storage and no I/O.

Kept apart from the handlers so the rules can be read in one place and tested exhaustively
(property tests generate parent and child grants and check the decision against the semantics).

* A grant's encryption-context constraint applies only to operations that take an encryption
  context (AWS KMS ``GrantConstraints``: "not applied to ... DescribeKey or RetireGrant"). Constraint
  keys match case-insensitively, values case-sensitively, as in AWS.
* A principal whose ``CreateGrant`` permission comes from grants (not from a policy) may only create
  a grant whose operations each come from a parent grant that allows ``CreateGrant``, and whose
  constraint is at least as strict as that parent's ("same or fewer permissions"; AWS KMS developer
  guide, "Granting CreateGrant permission"). *At least as strict* is decided semantically: every
  encryption context the child admits must be admitted by the parent. That gives AWS's examples
  (a child may add pairs to an ``EncryptionContextSubset``, or turn it into an
  ``EncryptionContextEquals`` containing those pairs, but never the reverse) and nothing wider.
* Anything unreadable fails closed: a stored constraint of an unknown shape admits nothing and
  bounds nothing.
* A new constraint's encryption context is bounded as AWS bounds it (``check_constraint_size``): at
  most 8 pairs, each key and value at most 384 characters.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from khoa.services.kms import errors

# Every operation a grant can list (botocore's GrantOperation enum, as far as Khoa implements it).
GRANTABLE_OPERATIONS = frozenset(
    {
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncryptFrom",
        "ReEncryptTo",
        "Sign",
        "Verify",
        "GetPublicKey",
        "CreateGrant",
        "RetireGrant",
        "DescribeKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateMac",
        "VerifyMac",
        "DeriveSharedSecret",
    }
)

# The grant operations that take an encryption context: the only ones a constraint restricts.
CONTEXT_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)

ANY = "any"
SUBSET = "subset"
EQUALS = "equals"

# AWS CreateGrant, Constraints: "Each constraint value can include up to 8 encryption context pairs.
# The encryption context value in each constraint cannot exceed 384 characters." Khoa reads the
# second sentence per key and per value (the lenient reading), so every constraint it stores holds at
# most 8 x 2 x 384 characters and authorisation reads a bounded amount per grant.
MAX_CONSTRAINT_PAIRS = 8
MAX_CONSTRAINT_CHARS = 384


@dataclass(frozen=True)
class Constraint:
    """A grant's constraints, normalised: ``kind`` is ANY, SUBSET or EQUALS; ``pairs`` hold
    (lower-cased key, value); ``readable`` is False for a stored shape Khoa does not know."""

    kind: str = ANY
    pairs: frozenset[tuple[str, str]] = frozenset()
    source_arn: str | None = None
    readable: bool = True

    @functools.cached_property
    def satisfiable(self) -> bool:
        """False when two pairs give one (case-insensitive) key different values: no context fits.
        Computed once per constraint (authorisation reuses parsed constraints across requests)."""
        keys = [k for k, _ in self.pairs]
        return self.readable and len(keys) == len(set(keys))


UNREADABLE = Constraint(readable=False)


def _pairs(value: Any) -> frozenset[tuple[str, str]] | None:
    if not isinstance(value, Mapping):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return frozenset((k.lower(), v) for k, v in value.items())


def parse_constraint(raw: Mapping[str, Any] | None) -> Constraint:
    """The wire/stored ``GrantConstraints`` as a Constraint (UNREADABLE for any other shape)."""
    if not raw:
        return Constraint()
    if not isinstance(raw, Mapping) or set(raw) - {
        "EncryptionContextSubset",
        "EncryptionContextEquals",
        "SourceArn",
    }:
        return UNREADABLE
    source = raw.get("SourceArn")
    if source is not None and not isinstance(source, str):
        return UNREADABLE
    subset, equals = raw.get("EncryptionContextSubset"), raw.get("EncryptionContextEquals")
    if subset is not None and equals is not None:
        return UNREADABLE
    if subset is None and equals is None:
        return Constraint(source_arn=source)
    pairs = _pairs(subset if subset is not None else equals)
    if pairs is None:
        return UNREADABLE
    return Constraint(SUBSET if subset is not None else EQUALS, pairs, source)


def check_constraint_size(raw: Mapping[str, Any] | None) -> None:
    """ValidationException for an encryption-context constraint beyond AWS's bounds (see
    ``MAX_CONSTRAINT_PAIRS``); any other shape is left to ``parse_constraint``."""
    if not raw or not isinstance(raw, Mapping):
        return
    for member in ("EncryptionContextSubset", "EncryptionContextEquals"):
        context = raw.get(member)
        if not isinstance(context, Mapping):
            continue
        field = f"constraints.{member[0].lower()}{member[1:]}"
        if len(context) > MAX_CONSTRAINT_PAIRS:
            raise errors.validation(
                f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                f"Map must have at most {MAX_CONSTRAINT_PAIRS} encryption context pairs"
            )
        for key, value in context.items():
            if len(str(key)) > MAX_CONSTRAINT_CHARS or len(str(value)) > MAX_CONSTRAINT_CHARS:
                raise errors.validation(
                    f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                    f"Encryption context keys and values must have length less than or equal to "
                    f"{MAX_CONSTRAINT_CHARS}"
                )


def _lowered(context: Mapping[str, str] | None) -> dict[str, str] | None:
    """The request's encryption context with lower-cased keys; None when two keys collide (then
    which value a constraint should see is ambiguous, so no constraint is satisfied)."""
    lowered: dict[str, str] = {}
    for key, value in (context or {}).items():
        if key.lower() in lowered:
            return None
        lowered[key.lower()] = value
    return lowered


def admitter(operation: str, context: Mapping[str, str] | None) -> Callable[[Constraint], bool]:
    """``admits`` for one request, checked against many grants: the request's encryption context is
    read once here, not once per grant.

    A SourceArn constraint is never met: it restricts a grant to an AWS service acting for a
    resource, and Khoa's callers are never such a service.
    """
    if operation not in CONTEXT_OPERATIONS:
        return lambda constraint: constraint.readable and constraint.source_arn is None
    lowered = _lowered(context)
    items = frozenset(lowered.items()) if lowered is not None else frozenset()

    def check(constraint: Constraint) -> bool:
        if not constraint.readable or constraint.source_arn is not None:
            return False
        if constraint.kind == ANY:
            return True
        if lowered is None or not constraint.satisfiable:
            return False
        if constraint.kind == SUBSET:
            return all(lowered.get(k) == v for k, v in constraint.pairs)
        return items == constraint.pairs

    return check


def admits(constraint: Constraint, operation: str, context: Mapping[str, str] | None) -> bool:
    """Does a grant with ``constraint`` allow ``operation`` with this encryption context?"""
    return admitter(operation, context)(constraint)


def at_least_as_strict(child: Constraint, parent: Constraint) -> bool:
    """Is every encryption context ``child`` admits also admitted by ``parent`` (and the source ARN
    no wider)? Decided on the sets of contexts each admits."""
    if not child.readable or not parent.readable:
        return False
    if parent.source_arn is not None and child.source_arn != parent.source_arn:
        return False
    if child.kind != ANY and not child.satisfiable:
        return True  # the child admits no context at all
    if parent.kind == ANY:
        return True
    if not parent.satisfiable:
        return False  # the parent admits nothing; the child (satisfiable) admits something
    if parent.kind == SUBSET:
        if child.kind == ANY:
            return not parent.pairs  # an empty subset constraint admits every context
        return parent.pairs <= child.pairs
    return child.kind == EQUALS and child.pairs == parent.pairs


@dataclass(frozen=True)
class Parent:
    """What one grant that allows CreateGrant lets its grantee pass on."""

    operations: frozenset[str]
    constraint: Constraint


def child_within(operations: Iterable[str], constraint: Constraint, parents: Iterable[Parent]) -> bool:
    """May a principal whose CreateGrant comes only from ``parents`` create this grant?

    Each requested operation must come from a parent that allows CreateGrant, lists that operation
    and has a constraint no stricter than the child's. (Several parents can together cover the
    operations: each (operation, context) the child allows is then allowed to the caller by one of
    them.) With no parents nothing may be created.
    """
    usable = [p for p in parents if "CreateGrant" in p.operations and p.constraint.readable]
    requested = set(operations)
    if not requested or not usable:
        return False
    for operation in requested:
        if not any(
            operation in p.operations and at_least_as_strict(constraint, p.constraint) for p in usable
        ):
            return False
    return True


# -- grant tokens -------------------------------------------------------------------------------------

_TOKEN_PREFIX = b"khoa-grant-v1:"


def make_grant_token(grant_id: str) -> str:
    raw = _TOKEN_PREFIX + grant_id.encode() + b":" + secrets.token_hex(16).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def grant_id_from_token(token: str) -> str:
    """The grant a Khoa-issued token names; InvalidGrantTokenException for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise errors.invalid_grant_token() from None
    if not raw.startswith(_TOKEN_PREFIX):
        raise errors.invalid_grant_token()
    grant_id, _, _ = raw[len(_TOKEN_PREFIX) :].decode(errors="replace").partition(":")
    if len(grant_id) != 64 or any(c not in "0123456789abcdef" for c in grant_id):
        raise errors.invalid_grant_token()
    return grant_id
