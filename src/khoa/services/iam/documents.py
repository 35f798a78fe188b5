"""Policy documents as IAM stores them: validated on the way in, URL-encoded on the way out.

Identity policies (inline and managed) must name resources and no principal; trust policies must name
a principal (never NotPrincipal) and only STS actions. Sizes count characters other than whitespace,
as IAM's quotas do.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from khoa.access.policy import Policy, PolicyError
from khoa.services.iam import errors

MANAGED_POLICY_SIZE = 6144
TRUST_POLICY_SIZE = 2048
INLINE_SIZE = {"user": 2048, "group": 5120, "role": 10240}

_ACCOUNT = re.compile(r"^\d{12}$")
_AWS_PRINCIPAL = re.compile(
    r"^arn:aws:(?:iam::\d{12}:(?:root|user/[^*?]+|role/[^*?]+)"
    r"|sts::\d{12}:(?:assumed-role/[^*?]+/[^*?]+|federated-user/[^*?]+))$"
)


def size(document: str) -> int:
    return sum(1 for ch in document if not ch.isspace())


def encode(document: str | None) -> str | None:
    """IAM returns documents URL-encoded (RFC 3986); SDKs decode them."""
    return None if document is None else quote(document, safe="")


def validate_identity(document: str) -> Policy:
    """An identity-based policy (inline, managed, or a permissions boundary).

    The one policy parser checks the grammar (actions prefixed by a vendor, resources that are ARNs or
    ``*``, no principal) with IAM's Sid rules; the callers check IAM's size quotas.
    """
    try:
        return Policy.parse(document, "identity", require_resource=True, iam=True)
    except PolicyError as exc:
        raise errors.malformed(str(exc)) from None


def validate_trust(document: str) -> Policy:
    """A role's trust (assume-role) policy: a Principal in every statement, only STS actions, and no
    Resource or NotPrincipal element ("You cannot use the NotPrincipal element ... in an IAM role trust
    policy": with Allow it would let every principal of every account assume the role)."""
    if size(document) > TRUST_POLICY_SIZE:
        raise errors.quota("ACLSizePerRole", TRUST_POLICY_SIZE)
    try:
        policy = Policy.parse(document, "resource", require_principal=True, iam=True)
    except PolicyError as exc:
        raise errors.malformed(str(exc)) from None
    for statement in policy.statements:
        if statement.not_principals is not None:
            raise errors.malformed("Has prohibited field NotPrincipal")
        if statement.resources:
            raise errors.malformed("Has prohibited field Resource")
        if statement.not_resources:
            raise errors.malformed("Has prohibited field NotResource")
        for action in statement.actions + statement.not_actions:
            if not action.lower().startswith("sts:"):
                raise errors.malformed("AssumeRole policy may only specify STS AssumeRole actions.")
        for kind, value in statement.principals or ():
            if kind == "AWS" and value != "*" and not (_ACCOUNT.match(value) or _AWS_PRINCIPAL.match(value)):
                raise errors.malformed(f'Invalid principal in policy: "AWS":"{value}"')
    return policy
