"""Policy documents as IAM stores them: validated on the way in, URL-encoded on the way out.

Identity policies (inline and managed) must name resources and no principal; trust policies must name
a principal and only STS actions. Sizes count characters other than whitespace, as IAM's quotas do.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from khoa.iam.policy import Policy, PolicyError
from khoa.services.iam import errors

MANAGED_POLICY_SIZE = 6144
TRUST_POLICY_SIZE = 2048
INLINE_SIZE = {"user": 2048, "group": 5120, "role": 10240}

_ACTION = re.compile(r"^[A-Za-z0-9-]+:[A-Za-z0-9*?]+$")
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


def _statements(document: str) -> list[dict[str, Any]]:
    data = json.loads(document)
    raw = data.get("Statement", [])
    return [s for s in (raw if isinstance(raw, list) else [raw]) if isinstance(s, dict)]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_actions(statement: dict[str, Any]) -> None:
    for action in _as_list(statement.get("Action")) + _as_list(statement.get("NotAction")):
        if action != "*" and not _ACTION.match(action):
            raise errors.malformed(
                "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
            )


def validate_identity(document: str) -> Policy:
    """An identity-based policy (inline, managed, or a permissions boundary)."""
    try:
        policy = Policy.parse(document, "identity", require_resource=True)
    except PolicyError as exc:
        raise errors.malformed(str(exc)) from None
    for statement in _statements(document):
        _check_actions(statement)
        for resource in _as_list(statement.get("Resource")) + _as_list(statement.get("NotResource")):
            if resource != "*" and (not resource.startswith("arn:") or resource.count(":") < 5):
                raise errors.malformed(f'Resource {resource} must be in ARN format or "*".')
    return policy


def validate_trust(document: str) -> Policy:
    """A role's trust (assume-role) policy."""
    try:
        policy = Policy.parse(document, "resource", require_principal=True)
    except PolicyError as exc:
        raise errors.malformed(str(exc)) from None
    if size(document) > TRUST_POLICY_SIZE:
        raise errors.quota("ACLSizePerRole", TRUST_POLICY_SIZE)
    for statement in _statements(document):
        for field in ("Resource", "NotResource"):
            if field in statement:
                raise errors.malformed(f"Has prohibited field {field}")
        for action in _as_list(statement.get("Action")) + _as_list(statement.get("NotAction")):
            if not action.lower().startswith("sts:"):
                raise errors.malformed("AssumeRole policy may only specify STS AssumeRole actions.")
    for parsed in policy.statements:
        for kind, value in (parsed.principals or ()) + (parsed.not_principals or ()):
            if kind == "AWS" and value != "*" and not (_ACCOUNT.match(value) or _AWS_PRINCIPAL.match(value)):
                raise errors.malformed(f'Invalid principal in policy: "AWS":"{value}"')
            if kind == "Service" and not value:
                raise errors.malformed(f'Invalid principal in policy: "SERVICE":"{value}"')
    return policy
