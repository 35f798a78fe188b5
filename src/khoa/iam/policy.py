"""Policy documents: parsing, validation, and matching one statement against a request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from khoa.iam.conditions import conditions_hold, known_operator
from khoa.iam.matching import match_pieces, pieces, wildcard_match

VARIABLES_VERSION = "2012-10-17"  # the first policy language version with policy variables

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


def _element(item: dict[str, Any], name: str, message: str) -> tuple[str, ...]:
    """A present Action/NotAction/Resource/NotResource element, which may not be empty."""
    if name not in item:
        return ()
    values = _strings(item[name])
    if not values:
        raise PolicyError(message)
    return values


def _condition_block(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError("Syntax errors in policy: Condition must be an object.")
    for operator, entries in value.items():
        if not known_operator(operator):
            raise PolicyError(f"Syntax errors in policy: unknown condition operator {operator}.")
        if not isinstance(entries, dict) or not entries:
            raise PolicyError(f"Syntax errors in policy: {operator} must map condition keys to values.")
        for key, values in entries.items():
            items = values if isinstance(values, list) else [values]
            if not key or any(not isinstance(v, str | bool | int | float) for v in items):
                raise PolicyError(f"Syntax errors in policy: invalid values for condition key {key}.")
    return value


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
    # Policy variables are substituted only in policies of Version 2012-10-17; elsewhere they are text.
    variables: bool = True

    def matches_action(self, action: str) -> bool:
        """Action names match case-insensitively, with ``*`` and ``?``."""
        if self.actions:
            return any(wildcard_match(a, action, ignore_case=True) for a in self.actions)
        if self.not_actions:
            return not any(wildcard_match(a, action, ignore_case=True) for a in self.not_actions)
        return False

    def matches_resource(self, resource: str, context: dict[str, list[str]]) -> bool:
        """Resource ARNs match case-sensitively, with ``*`` and ``?`` and policy variables."""
        patterns = self.resources or self.not_resources
        if not patterns:
            return True  # resource-based policies may omit Resource
        hit = False
        resolved = 0
        for pattern in patterns:
            if not self.variables or "${" not in pattern:
                resolved += 1
                hit = wildcard_match(pattern, resource)
            else:
                parts = pieces(pattern, context)
                if parts is None:
                    continue  # an unresolvable variable: this entry matches nothing
                resolved += 1
                hit = match_pieces(parts, resource)
            if hit:
                break
        if not resolved:
            return False  # only unresolvable variables: the statement does not apply
        return hit if self.resources else not hit

    def matches_conditions(self, context: dict[str, list[str]]) -> bool:
        return conditions_hold(self.condition, context, variables=self.variables)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    source: str = ""  # what kind of policy: identity, resource, boundary, session
    version: str = ""

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
            if "Resource" in item and "NotResource" in item:
                raise PolicyError("Syntax errors in policy: a statement has either Resource or NotResource.")
            if require_resource and "Resource" not in item and "NotResource" not in item:
                raise PolicyError("Policy statement must contain resources.")
            if "Principal" in item and "NotPrincipal" in item:
                raise PolicyError(
                    "Syntax errors in policy: a statement has either Principal or NotPrincipal."
                )
            sid = item.get("Sid", "")
            if not isinstance(sid, str):
                raise PolicyError("Syntax errors in policy: Sid must be a string.")
            actions = _element(item, "Action", "Policy statement must contain actions.")
            not_actions = _element(item, "NotAction", "Policy statement must contain actions.")
            resources = _element(item, "Resource", "Policy statement must contain resources.")
            not_resources = _element(item, "NotResource", "Policy statement must contain resources.")
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
            condition = _condition_block(item.get("Condition"))
            statements.append(
                Statement(
                    effect=effect,
                    sid=sid,
                    actions=actions,
                    not_actions=not_actions,
                    resources=resources,
                    not_resources=not_resources,
                    principals=principals,
                    not_principals=not_principals,
                    condition=condition,
                    variables=version == VARIABLES_VERSION,
                )
            )
        return cls(tuple(statements), source, version or "")
