"""Policy documents: the one strict parser every policy goes through, and matching a statement.

Every policy Khoa stores or evaluates -- KMS key policies, Secrets Manager resource policies, IAM
identity, managed, inline, trust and boundary policies, STS session policies and the input of
SimulateCustomPolicy -- is read by :meth:`Policy.parse`, which accepts exactly IAM's JSON policy grammar
("Grammar of the IAM JSON policy language") and refuses everything else with :class:`PolicyError`, which
each service turns into its MalformedPolicyDocument error at write time. A document the parser refuses
is never stored, and one found in storage anyway is read as :func:`deny_all` (fail closed), never as an
empty policy.

The grammar, as enforced here:

- The document is a JSON object (strict JSON: no ``NaN``/``Infinity``, no duplicate keys, which
  different parsers resolve differently) nested at most :data:`MAX_DEPTH` deep, with only ``Version``
  (``2008-10-17`` or ``2012-10-17``), ``Id`` (a string) and ``Statement`` (an object or a non-empty list
  of objects).
- A statement has only ``Sid``, ``Effect``, ``Principal``/``NotPrincipal``, ``Action``/``NotAction``,
  ``Resource``/``NotResource`` and ``Condition``; ``Effect`` is exactly ``Allow`` or ``Deny``; exactly one
  of ``Action``/``NotAction``; at most one of each other pair.
- ``Principal`` is ``"*"`` or a non-empty object whose keys are ``AWS``, ``Service``, ``Federated``,
  ``CanonicalUser``, each a string or a non-empty list of strings; an ``AWS`` value is ``*``, an account
  ID, an ARN or a unique ID, never a partial wildcard.
- Actions are ``*`` or ``service:action`` (wildcards allowed in the action name); resources are ``*`` or
  ARNs; both are a string or a non-empty list of strings.
- ``Condition`` maps known operators (exact case, with ``IfExists`` and the ``ForAnyValue:`` /
  ``ForAllValues:`` qualifiers; ``Null`` takes no ``IfExists``) to non-empty objects of condition key →
  a string, boolean or number, or a non-empty list of them.
- IAM's own policies (``iam=True``) also require Sids of ASCII letters and digits, unique in the policy.

``NotPrincipal`` with ``Allow`` is grammatical but unsupported ("NotPrincipal must be used with
"Effect":"Deny""): the services that store resource policies refuse it at write time
(:func:`refuse_allow_not_principal`; IAM refuses NotPrincipal in trust policies altogether), and
evaluation never grants on such a statement, should one be in storage anyway. The parser itself still
reads it, so that Access Analyzer can point at it (ALLOW_WITH_NOT_PRINCIPAL).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from khoa.access.conditions import conditions_hold, known_operator
from khoa.access.matching import match_pieces, pieces, wildcard_match

VARIABLES_VERSION = "2012-10-17"  # the first policy language version with policy variables
VERSIONS = ("2012-10-17", "2008-10-17")
# The grammar nests at most six deep (document, Statement list, statement, Condition, operator, value
# list); anything much deeper is refused before the JSON parser could recurse on it.
MAX_DEPTH = 16
# Document size limits AWS documents: KMS key policies 32 KB, Secrets Manager resource policies 20 KB
# (IAM's own quotas, which count characters other than whitespace, live in services/iam/documents.py).
KEY_POLICY_MAX_BYTES = 32768
SECRET_POLICY_MAX_CHARS = 20480
SYNTAX = "Syntax errors in policy."
UNREADABLE_SID = "KhoaUnreadablePolicy"

_TOP_KEYS = {"Version", "Id", "Statement"}
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
_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_ACTION = re.compile(r"^[A-Za-z0-9-]+:[A-Za-z0-9*?_-]+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_UNIQUE_ID = re.compile(r"^A[A-Z0-9]{15,127}$")
_IAM_SID = re.compile(r"^[0-9A-Za-z]*$")


class PolicyError(ValueError):
    """A policy document IAM would refuse (MalformedPolicyDocument)."""


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` before any recursive parser sees it.

    Strings are blanked first so brackets inside them do not count; an unterminated string makes the
    JSON invalid anyway, and the parser fails on it before reaching anything miscounted after it.
    """
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                raise PolicyError(f"{SYNTAX} The policy is nested more than {limit} levels deep.")
        else:
            depth -= 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyError(f"{SYNTAX} Duplicate key: {key}.")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise PolicyError(f"{SYNTAX} {name} is not a JSON number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PolicyError(f"{SYNTAX} {text} is out of range.")
    return value


def load_json(text: str) -> Any:
    """Strict JSON: bounded nesting, no duplicate keys, no NaN/Infinity, no number that overflows."""
    check_depth(text)
    try:
        return json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_no_constants, parse_float=_finite
        )
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(SYNTAX) from None


def _strings(value: Any, name: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings (no numbers, no nested lists)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, list) and not value:
        raise PolicyError(f"{SYNTAX} {name} must not be an empty list.")
    raise PolicyError(f"{SYNTAX} {name} must be a string or a list of strings.")


def _element(item: dict[str, Any], name: str, message: str) -> tuple[str, ...]:
    """A present Action/NotAction/Resource/NotResource element, which may not be empty."""
    if name not in item:
        return ()
    value = item[name]
    if value == [] or value == "":
        raise PolicyError(message)
    return _strings(value, name)


def _check_actions(values: tuple[str, ...]) -> None:
    for action in values:
        if action != "*" and not _ACTION.match(action):
            raise PolicyError(
                f"Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. ({action})"
            )


def _check_resources(values: tuple[str, ...]) -> None:
    for resource in values:
        if resource != "*" and (not resource.lower().startswith("arn:") or resource.count(":") < 5):
            raise PolicyError(f'Resource {resource} must be in ARN format or "*".')


def _condition_value_ok(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _condition_block(value: Any) -> dict[str, Any]:
    if value is None:
        raise PolicyError(f"{SYNTAX} Condition must be an object.")
    if not isinstance(value, dict):
        raise PolicyError(f"{SYNTAX} Condition must be an object.")
    for operator, entries in value.items():
        if not known_operator(operator):
            raise PolicyError(f"Invalid Condition type : {operator}")
        if not isinstance(entries, dict) or not entries:
            raise PolicyError(f"{SYNTAX} {operator} must map condition keys to values.")
        for key, values in entries.items():
            items = values if isinstance(values, list) else [values]
            if (
                not isinstance(key, str)
                or not key.strip()
                or not items
                or not all(_condition_value_ok(v) for v in items)
            ):
                raise PolicyError(f"{SYNTAX} Invalid values for condition key {key} under {operator}.")
    return value


def _check_principal_value(kind: str, value: str) -> None:
    if not value.strip():
        raise PolicyError(f'Invalid principal in policy: "{kind}":"{value}"')
    if value == "*":
        return
    if "*" in value or "?" in value:
        # "You cannot use a wildcard to match part of a principal name or ARN."
        raise PolicyError(f'Invalid principal in policy: "{kind}":"{value}"')
    if kind == "AWS" and not (
        _ACCOUNT.match(value)
        or _UNIQUE_ID.match(value)
        or (value.startswith("arn:") and value.count(":") >= 5)
    ):
        raise PolicyError(f'Invalid principal in policy: "{kind}":"{value}"')


def _principals(value: Any, name: str) -> tuple[tuple[str, str], ...]:
    """Normalise Principal / NotPrincipal into (type, value) pairs."""
    if value == "*":
        return (("AWS", "*"),)
    if not isinstance(value, dict) or not value:
        raise PolicyError(f'{SYNTAX} {name} must be "*" or an object such as {{"AWS": [...]}}.')
    pairs = []
    for kind, items in value.items():
        if kind not in _PRINCIPAL_TYPES:
            raise PolicyError(f"{SYNTAX} Invalid principal type: {kind}")
        for item in _strings(items, f"{name} {kind}"):
            _check_principal_value(kind, item)
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
        """Resource ARNs match case-sensitively, with ``*`` and ``?`` and policy variables.

        An entry holding a variable with no value "will not match any resource" (IAM User Guide,
        "Policy variables with no value"): in ``Resource`` it allows nothing, and in ``NotResource`` it
        excludes nothing, so the other entries decide; a ``NotResource`` whose every entry has such a
        variable excludes nothing at all and the statement covers every resource.
        """
        patterns = self.resources or self.not_resources
        if not patterns:
            return True  # resource-based policies may omit Resource
        hit = any(self._entry_matches(pattern, resource, context) for pattern in patterns)
        return hit if self.resources else not hit

    def _entry_matches(self, pattern: str, resource: str, context: dict[str, list[str]]) -> bool:
        if not self.variables or "${" not in pattern:
            return wildcard_match(pattern, resource)
        parts = pieces(pattern, context)
        return parts is not None and match_pieces(parts, resource)  # unresolved: matches nothing

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
        iam: bool = False,
    ) -> Policy:
        """Parse ``document`` (JSON text, or already-decoded JSON) or raise :class:`PolicyError`.

        ``source`` "identity" refuses principals; ``require_resource`` / ``require_principal`` demand
        those elements in every statement; ``iam`` applies IAM's own Sid rules (letters and digits,
        unique within the policy).
        """
        data = load_json(document) if isinstance(document, str) else document
        if not isinstance(data, dict):
            raise PolicyError(f"{SYNTAX} The policy must be a JSON object.")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise PolicyError(f"{SYNTAX} unknown policy element {sorted(unknown)[0]}.")
        version = data.get("Version")
        if "Version" in data and version not in VERSIONS:
            raise PolicyError("The policy must contain a valid version string")
        if "Id" in data and not isinstance(data["Id"], str):
            raise PolicyError(f"{SYNTAX} Id must be a string.")
        raw = data.get("Statement")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise PolicyError("Policy document must contain at least one Statement.")
        sids: set[str] = set()
        statements = [
            _statement(item, source, version, sids, require_resource, require_principal, iam) for item in raw
        ]
        return cls(tuple(statements), source, version or "")


def _statement(
    item: Any,
    source: str,
    version: str | None,
    sids: set[str],
    require_resource: bool,
    require_principal: bool,
    iam: bool,
) -> Statement:
    """One statement of the grammar (see the module docstring)."""
    if not isinstance(item, dict):
        raise PolicyError(f"{SYNTAX} Each statement must be a JSON object.")
    unknown = set(item) - _STATEMENT_KEYS
    if unknown:
        raise PolicyError(f"{SYNTAX} unknown element {sorted(unknown)[0]}.")
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError("Invalid effect: statements need an Effect of Allow or Deny.")
    if ("Action" in item) == ("NotAction" in item):
        raise PolicyError("Policy statement must contain actions.")
    if "Resource" in item and "NotResource" in item:
        raise PolicyError(f"{SYNTAX} A statement has either Resource or NotResource.")
    if require_resource and "Resource" not in item and "NotResource" not in item:
        raise PolicyError("Policy statement must contain resources.")
    if "Principal" in item and "NotPrincipal" in item:
        raise PolicyError(f"{SYNTAX} A statement has either Principal or NotPrincipal.")
    sid = item.get("Sid", "")
    if not isinstance(sid, str):
        raise PolicyError(f"{SYNTAX} Sid must be a string.")
    if iam:
        if not _IAM_SID.match(sid):
            raise PolicyError(
                "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the "
                "regular expression [0-9A-Za-z]*"
            )
        if sid and sid in sids:
            raise PolicyError("Statement IDs (SID) in a single policy must be unique.")
        sids.add(sid)
    actions = _element(item, "Action", "Policy statement must contain actions.")
    not_actions = _element(item, "NotAction", "Policy statement must contain actions.")
    _check_actions(actions + not_actions)
    resources = _element(item, "Resource", "Policy statement must contain resources.")
    not_resources = _element(item, "NotResource", "Policy statement must contain resources.")
    _check_resources(resources + not_resources)
    principals = _principals(item["Principal"], "Principal") if "Principal" in item else None
    not_principals = _principals(item["NotPrincipal"], "NotPrincipal") if "NotPrincipal" in item else None
    if require_principal and principals is None and not_principals is None:
        raise PolicyError("Policy statement must contain a principal.")
    if source == "identity" and not require_principal and (principals or not_principals):
        raise PolicyError("Policy document should not specify a principal.")
    condition = _condition_block(item["Condition"]) if "Condition" in item else {}
    return Statement(
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


ALLOW_NOT_PRINCIPAL = (
    'NotPrincipal is supported only with "Effect": "Deny"; a statement with "Effect": "Allow" must '
    "name its principals with Principal."
)


def allows_not_principal(statement: Statement) -> bool:
    """An ``Allow`` statement with ``NotPrincipal``: unsupported, it grants nothing (khoa.access.evaluate)."""
    return statement.effect == "Allow" and statement.not_principals is not None


def refuse_allow_not_principal(policy: Policy) -> None:
    """Refuse a resource policy with an ``Allow`` + ``NotPrincipal`` statement (:class:`PolicyError`):
    read as "everyone not listed", it would grant every principal of every account."""
    if any(allows_not_principal(statement) for statement in policy.statements):
        raise PolicyError(ALLOW_NOT_PRINCIPAL)


# What the account root may still do on a resource whose stored policy does not parse: read and replace
# that policy, so it can be repaired through the API (KMS key policies still need the key policy to
# grant, so a broken key policy is repaired in storage, as AWS support would for a locked-out key).
REPAIR_ACTIONS = (
    "secretsmanager:GetResourcePolicy",
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:DeleteResourcePolicy",
)


def deny_all(source: str = "") -> Policy:
    """What a stored document that no longer parses means: an explicit Deny of everything to everyone.

    Evaluation must never read an unparseable document as empty (that would drop its Deny statements);
    this policy makes every request it takes part in an explicit deny, decided by ``UNREADABLE_SID``.
    A resource policy spares only the account root's :data:`REPAIR_ACTIONS` (within its own account,
    where only the root has ``aws:PrincipalType`` ``Account``); an identity-side policy spares nothing,
    since what it denied may have been the caller's own policy changes.
    """
    if source not in ("resource", "trust"):
        everything = Statement(effect="Deny", sid=UNREADABLE_SID, actions=("*",))
        return Policy((everything,), source, VARIABLES_VERSION)
    anyone = (("AWS", "*"),)
    statements = (
        Statement(effect="Deny", sid=UNREADABLE_SID, not_actions=REPAIR_ACTIONS, principals=anyone),
        Statement(
            effect="Deny",
            sid=UNREADABLE_SID,
            actions=REPAIR_ACTIONS,
            principals=anyone,
            condition={"StringNotEquals": {"aws:PrincipalType": "Account"}},
        ),
    )
    return Policy(statements, source, VARIABLES_VERSION)
