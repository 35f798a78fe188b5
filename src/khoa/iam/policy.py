"""Policy documents: parsing, validation, and matching one statement against a request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from khoa.iam.conditions import conditions_hold, known_operator
from khoa.iam.matching import substitute, wildcard_match

_STATEMENT_KEYS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}


class PolicyError(ValueError):
    """A policy document IAM would refuse (MalformedPolicyDocument)."""


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError("Policy elements must be strings or lists of strings.")


def _principals(value: Any) -> tuple[tuple[str, str], ...] | None:
    """Normalise Principal / NotPrincipal into (type, value) pairs; None when absent."""
    if value is None:
        return None
    if value == "*":
        return (("AWS", "*"),)
    if not isinstance(value, dict):
        raise PolicyError('Principal must be "*" or an object such as {"AWS": [...]}.')
    pairs = []
    for kind, items in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise PolicyError(f"Invalid principal type: {kind}")
        for item in _strings(items):
            pairs.append((kind, item))
    return tuple(pairs)


@dataclass(frozen=True)
class Statement:
    effect: str
    sid: str = ""
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    principals: tuple[tuple[str, str], ...] | None = None
    not_principals: tuple[tuple[str, str], ...] | None = None
    condition: dict[str, Any] = field(default_factory=dict)

    def matches_action(self, action: str) -> bool:
        if self.actions:
            return any(wildcard_match(a, action, ignore_case=True) for a in self.actions)
        return not any(wildcard_match(a, action, ignore_case=True) for a in self.not_actions)

    def matches_resource(self, resource: str, context: dict[str, list[str]]) -> bool:
        def hit(patterns: tuple[str, ...]) -> bool:
            for pattern in patterns:
                concrete = substitute(pattern, context)
                if concrete is not None and wildcard_match(concrete, resource):
                    return True
            return False

        if self.resources:
            return hit(self.resources)
        if self.not_resources:
            return not hit(self.not_resources)
        return True  # resource-based policies may omit Resource

    def matches_conditions(self, context: dict[str, list[str]]) -> bool:
        return conditions_hold(self.condition, context)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    source: str = ""  # what kind of policy: identity, resource, boundary, session

    @classmethod
    def parse(
        cls,
        document: str | dict[str, Any],
        source: str = "",
        *,
        require_resource: bool = False,
        require_principal: bool = False,
    ) -> Policy:
        if isinstance(document, str):
            try:
                data = json.loads(document)
            except ValueError:
                raise PolicyError("Syntax errors in policy.") from None
        else:
            data = document
        if not isinstance(data, dict):
            raise PolicyError("Syntax errors in policy.")
        version = data.get("Version")
        if version is not None and version not in ("2012-10-17", "2008-10-17"):
            raise PolicyError("The policy must contain a valid version string")
        raw = data.get("Statement")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise PolicyError("Policy document must contain at least one Statement.")
        statements = []
        for item in raw:
            if not isinstance(item, dict):
                raise PolicyError("Syntax errors in policy.")
            unknown = set(item) - _STATEMENT_KEYS
            if unknown:
                raise PolicyError(f"Syntax errors in policy: unknown element {sorted(unknown)[0]}.")
            effect = item.get("Effect")
            if effect not in ("Allow", "Deny"):
                raise PolicyError("Invalid effect: statements need an Effect of Allow or Deny.")
            if ("Action" in item) == ("NotAction" in item):
                raise PolicyError("Policy statement must contain actions.")
            if require_resource and "Resource" not in item and "NotResource" not in item:
                raise PolicyError("Policy statement must contain resources.")
            principals = _principals(item.get("Principal"))
            not_principals = _principals(item.get("NotPrincipal"))
            if require_principal and principals is None and not_principals is None:
                raise PolicyError("Policy statement must contain a principal.")
            if (
                not require_principal
                and (principals is not None or not_principals is not None)
                and source == "identity"
            ):
                raise PolicyError("Policy document should not specify a principal.")
            condition = item.get("Condition") or {}
            if not isinstance(condition, dict) or any(not known_operator(op) for op in condition):
                raise PolicyError("Syntax errors in policy: unknown condition operator.")
            statements.append(
                Statement(
                    effect=effect,
                    sid=str(item.get("Sid", "")),
                    actions=_strings(item.get("Action")),
                    not_actions=_strings(item.get("NotAction")),
                    resources=_strings(item.get("Resource")),
                    not_resources=_strings(item.get("NotResource")),
                    principals=principals,
                    not_principals=not_principals,
                    condition=condition,
                )
            )
        return cls(tuple(statements), source)
