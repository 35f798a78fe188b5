"""ValidatePolicy: the policy checks of IAM Access Analyzer for identity and resource policies of the
services Khoa serves.

The document is read twice: once by a JSON reader that remembers where every key and value is (for
AWS's locations), and statement by statement by the same parser evaluation uses
(:meth:`khoa.access.policy.Policy.parse`), whose refusals become ERROR findings. Semantic checks run on
what that parser accepted:

- ERROR: JSON syntax, unknown elements, effects, versions, a missing Statement/Action/Effect/Principal,
  a Principal in an identity policy, actions and condition keys unknown to the services Khoa serves,
  resource ARNs of another service than every action of the statement;
- SECURITY_WARNING: ``Allow`` with ``NotPrincipal``, ``*`` principals with no condition that pins the
  caller (:mod:`khoa.access.public`), wildcard actions (``*``, ``kms:*``, ``secretsmanager:*``...) on
  keys and secrets;
- WARNING: a missing Version;
- SUGGESTION: actions repeated or covered by a wildcard of the same statement, identical statements.
"""

from __future__ import annotations

import json
from typing import Any

from khoa.access.matching import wildcard_match
from khoa.access.policy import Policy, PolicyError, Statement
from khoa.access.public import public_statements
from khoa.protocol.context import RequestContext
from khoa.services.accessanalyzer import catalog, errors
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.accessanalyzer.locate import JsonSyntaxError, Located, Path, parse
from khoa.services.accessanalyzer.paging import page

_LINK = "https://docs.aws.amazon.com/IAM/latest/UserGuide/access-analyzer-reference-policy-checks.html"
_KINDS = {
    "ERROR": "error",
    "SECURITY_WARNING": "security-warning",
    "WARNING": "general-warning",
    "SUGGESTION": "suggestion",
}
_TOP = ("Version", "Id", "Statement")
_ELEMENTS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
_WILDCARD_SERVICES = ("kms", "secretsmanager")
_MAX_WILDCARDS = 64
_ARN_RESOURCES = {"kms": ("key/", "alias/"), "secretsmanager": ("secret:",), "ssm": ("parameter/",)}


class Findings:
    def __init__(self, located: Located | None) -> None:
        self.located = located
        self.items: list[dict[str, Any]] = []

    def add(self, kind: str, code: str, details: str, *paths: Path, key: bool = False) -> None:
        slug = code.lower().replace("_", "-")
        locations = [self.located.location(p, key=key) for p in paths] if self.located else []
        self.items.append(
            {
                "findingDetails": details,
                "findingType": kind,
                "issueCode": code,
                "learnMoreLink": f"{_LINK}#access-analyzer-reference-policy-checks-{_KINDS[kind]}-{slug}",
                "locations": locations,
            }
        )


def validate(document: str, policy_type: str, resource_type: str | None) -> list[dict[str, Any]]:
    """Every finding for ``document`` (in document order within each check)."""
    try:
        located = parse(document)
    except JsonSyntaxError as error:
        found = Findings(None)
        position = Located(document).position(min(error.offset, len(document)))
        found.add(
            "ERROR",
            "JSON_SYNTAX_ERROR",
            f"Fix the JSON syntax error at index {position['offset']} line {position['line']} "
            f"column {position['column']}.",
        )
        found.items[-1]["locations"] = [{"path": [], "span": {"start": position, "end": position}}]
        return found.items
    found = Findings(located)
    data = located.value
    if not isinstance(data, dict):
        found.add(
            "ERROR", "DATA_TYPE_MISMATCH", "The text does not match the expected JSON data type Object.", ()
        )
        return found.items
    for key in data:
        if key not in _TOP:
            found.add(
                "ERROR", "INVALID_POLICY_ELEMENT", f"The policy element {key} is not valid.", (key,), key=True
            )
    version = data.get("Version")
    if "Version" not in data:
        found.add(
            "WARNING",
            "MISSING_VERSION",
            "We recommend that you specify the Version element to help you with debugging permission issues.",
            (),
        )
    elif version not in ("2012-10-17", "2008-10-17"):
        found.add(
            "ERROR",
            "INVALID_VERSION",
            f"The version {json.dumps(version)} is not valid. Use one of the following versions: "
            "2012-10-17 or 2008-10-17.",
            ("Version",),
        )
    raw = data.get("Statement")
    if raw is None:
        found.add("ERROR", "MISSING_STATEMENT", "Add a Statement element to the policy.", ())
        return found.items
    entries: list[tuple[Path, Any]]
    if isinstance(raw, list):
        entries = [(("Statement", i), item) for i, item in enumerate(raw)]
    else:
        entries = [(("Statement",), raw)]
    # AWS's resource types for ValidatePolicy are other services' (S3, DynamoDB...): for keys and secrets
    # it runs the checks that apply to every resource policy, as Khoa does.
    resource_service = None
    parsed: list[tuple[Path, Statement, dict[str, Any]]] = []
    for path, item in entries:
        statement = _structure(found, path, item, policy_type, version)
        if statement is not None:
            parsed.append((path, statement, item))
    sids: dict[str, Path] = {}
    for path, statement, item in parsed:
        if statement.sid:
            if statement.sid in sids:
                found.add(
                    "ERROR",
                    "UNIQUE_SIDS_REQUIRED",
                    "Duplicate statement IDs (SIDs) are not supported. Use unique SIDs.",
                    (*path, "Sid"),
                )
            sids.setdefault(statement.sid, path)
        _actions(found, path, statement, item)
        _conditions(found, path, statement, item)
        _resources(found, path, statement, item, resource_service)
        _security(found, path, statement, item, policy_type, resource_service)
    _redundant_statements(found, parsed)
    return found.items


def _structure(found: Findings, path: Path, item: Any, policy_type: str, version: Any) -> Statement | None:
    """The statement as the evaluation parser reads it, or None (with ERROR findings) when it cannot."""
    if not isinstance(item, dict):
        found.add(
            "ERROR", "DATA_TYPE_MISMATCH", "The text does not match the expected JSON data type Object.", path
        )
        return None
    problems = len(found.items)
    for key in item:
        if key not in _ELEMENTS:
            found.add(
                "ERROR",
                "INVALID_POLICY_ELEMENT",
                f"The policy element {key} is not valid.",
                (*path, key),
                key=True,
            )
    if "Effect" not in item:
        found.add(
            "ERROR",
            "MISSING_EFFECT",
            "Add an Effect element to the policy statement with a value of Allow or Deny.",
            path,
        )
    elif item["Effect"] not in ("Allow", "Deny"):
        found.add(
            "ERROR",
            "INVALID_EFFECT",
            f"The effect {json.dumps(item['Effect'])} is not valid. Use Allow or Deny.",
            (*path, "Effect"),
        )
    if "Action" not in item and "NotAction" not in item:
        found.add(
            "ERROR", "MISSING_ACTION", "Add an Action or NotAction element to the policy statement.", path
        )
    if policy_type == "IDENTITY_POLICY":
        for name in ("Principal", "NotPrincipal"):
            if name in item:
                found.add(
                    "ERROR",
                    "UNSUPPORTED_PRINCIPAL",
                    f"Policy type IDENTITY_POLICY does not support the {name} element. "
                    f"Remove the {name} element.",
                    (*path, name),
                    key=True,
                )
        if "Resource" not in item and "NotResource" not in item:
            found.add(
                "ERROR",
                "MISSING_RESOURCE",
                "Add a Resource or NotResource element to the policy statement.",
                path,
            )
    elif "Principal" not in item and "NotPrincipal" not in item:
        found.add("ERROR", "MISSING_PRINCIPAL", "Add a Principal element to the policy statement.", path)
    if len(found.items) > problems:
        return None
    document: dict[str, Any] = {"Statement": [item]}
    if version in ("2012-10-17", "2008-10-17"):  # a bad one is INVALID_VERSION already
        document["Version"] = version
    try:
        policy = Policy.parse(
            document,
            "resource" if policy_type == "RESOURCE_POLICY" else "identity",
            require_principal=policy_type == "RESOURCE_POLICY",
        )
    except PolicyError as error:
        found.add("ERROR", "POLICY_SYNTAX_ERROR", str(error), path)
        return None
    return policy.statements[0]


def _element_paths(path: Path, item: dict[str, Any], name: str) -> list[tuple[Path, Any]]:
    value = item.get(name)
    if isinstance(value, list):
        return [((*path, name, i), v) for i, v in enumerate(value)]
    return [((*path, name), value)] if name in item else []


def _actions(found: Findings, path: Path, statement: Statement, item: dict[str, Any]) -> None:
    for name in ("Action", "NotAction"):
        seen: dict[str, Path] = {}
        values = _element_paths(path, item, name)
        # the wildcard entries that may cover others (bounded: a redundancy hint is not worth O(n²))
        wildcards = [v for _, v in values if isinstance(v, str) and ("*" in v or "?" in v)][:_MAX_WILDCARDS]
        for where, action in values:
            if not isinstance(action, str):
                continue
            if action == "*":
                seen.setdefault("*", where)
                continue
            prefix, _, rest = action.partition(":")
            prefix = prefix.lower()
            known = catalog.actions(prefix)
            if "*" in rest or "?" in rest:
                exists = any(wildcard_match(rest, a, ignore_case=True) for a in known)
            else:
                exists = rest.lower() in known
            if known and not exists:
                found.add("ERROR", "INVALID_ACTION", f"The action {action} does not exist.", where)
            lowered = action.lower()
            if lowered in seen:
                found.add(
                    "SUGGESTION",
                    "REDUNDANT_ACTION",
                    f"The action {action} is redundant because it appears more than once in the statement.",
                    where,
                )
                continue
            covering = next(
                (
                    other
                    for other in wildcards
                    if other.lower() != lowered and wildcard_match(other, action, ignore_case=True)
                ),
                None,
            )
            if covering is not None:
                found.add(
                    "SUGGESTION",
                    "REDUNDANT_ACTION",
                    f"The 1 action(s) are redundant because they provide similar permissions to the "
                    f"following action: {covering}.",
                    where,
                )
            seen[lowered] = where


def _conditions(found: Findings, path: Path, statement: Statement, item: dict[str, Any]) -> None:
    block = item.get("Condition")
    if not isinstance(block, dict):
        return
    for operator, entries in block.items():
        if not isinstance(entries, dict):
            continue
        for key in entries:
            where = (*path, "Condition", operator, key)
            prefix, colon, _ = key.partition(":")
            prefix = prefix.lower()
            if not colon:
                found.add(
                    "ERROR",
                    "INVALID_CONDITION_KEY_FORMAT",
                    f"The condition key format is not valid: {key}. Use the format service:keyname.",
                    where,
                    key=True,
                )
            elif prefix == "aws" and not catalog.global_key_known(key):
                found.add(
                    "ERROR",
                    "INVALID_GLOBAL_CONDITION_KEY",
                    f"The condition key {key} that you provided is not a valid global condition key.",
                    where,
                    key=True,
                )
            elif prefix in catalog.SERVICES and not catalog.service_key_known(prefix, key):
                found.add(
                    "ERROR",
                    "INVALID_SERVICE_CONDITION_KEY",
                    f"The condition key {key} does not exist in the service {prefix}.",
                    where,
                    key=True,
                )


def _arn_service(resource: str) -> tuple[str, str] | None:
    parts = resource.split(":", 5)
    if resource == "*" or len(parts) < 6 or "*" in parts[2] or "?" in parts[2]:
        return None
    return parts[2].lower(), parts[5]


def _resources(
    found: Findings, path: Path, statement: Statement, item: dict[str, Any], resource_service: str | None
) -> None:
    if not statement.actions or "*" in statement.actions:
        return
    services = {a.split(":", 1)[0].lower() for a in statement.actions}
    if not services <= set(catalog.SERVICES):
        return  # an action of a service Khoa does not serve: its resources are not judged here
    for where, resource in _element_paths(path, item, "Resource"):
        if not isinstance(resource, str):
            continue
        arn = _arn_service(resource)
        if arn is None:
            continue
        service, rest = arn
        if service not in services:
            found.add(
                "ERROR",
                "UNSUPPORTED_RESOURCE_ARN_IN_POLICY",
                f"The resource {resource} is not a resource of the service of any action in the statement "
                f"({', '.join(sorted(statement.actions))}).",
                where,
            )
            continue
        prefixes = _ARN_RESOURCES.get(service)
        if prefixes and not rest.startswith(prefixes) and not rest.startswith("*"):
            found.add(
                "ERROR",
                "INVALID_ARN_RESOURCE",
                f"Resource ARN does not match the expected ARN format. Update the resource portion of the "
                f"ARN: {rest}.",
                where,
            )


def _security(
    found: Findings,
    path: Path,
    statement: Statement,
    item: dict[str, Any],
    policy_type: str,
    resource_service: str | None,
) -> None:
    if statement.effect != "Allow":
        return
    if statement.not_principals is not None:
        found.add(
            "SECURITY_WARNING",
            "ALLOW_WITH_NOT_PRINCIPAL",
            "Using Allow with NotPrincipal can be overly permissive: it grants access to every principal "
            "that is not listed, including anonymous users. Use Principal with the principals that need "
            "access.",
            (*path, "NotPrincipal"),
            key=True,
        )
    elif statement.principals is not None and public_statements(Policy((statement,), "resource")):
        found.add(
            "SECURITY_WARNING",
            "PUBLIC_ACCESS",
            'The statement allows access to any principal ("*") with no condition that restricts the '
            "caller (such as aws:PrincipalAccount, aws:PrincipalOrgID or aws:SourceIp).",
            (*path, "Principal"),
        )
    for where, action in _element_paths(path, item, "Action"):
        if not isinstance(action, str):
            continue
        service, _, name = action.partition(":")
        broad = action == "*" or (service.lower() in _WILDCARD_SERVICES and name == "*")
        if not broad:
            continue
        if action == "*" and policy_type == "IDENTITY_POLICY" and not _touches_keys_or_secrets(statement):
            continue
        target = "keys and secrets" if action == "*" else ("keys" if service.lower() == "kms" else "secrets")
        found.add(
            "SECURITY_WARNING",
            "WILDCARD_ACTION",
            f"The action {action} allows every operation on {target}, including deleting them and "
            "changing who can use them. Grant only the actions that are needed.",
            where,
        )
    if statement.not_actions:
        found.add(
            "SECURITY_WARNING",
            "ALLOW_WITH_NOT_ACTION",
            "Using Allow with NotAction allows every action not listed, including those of services added "
            "later. Use Action with the actions that are needed.",
            (*path, "NotAction"),
            key=True,
        )


def _touches_keys_or_secrets(statement: Statement) -> bool:
    if not statement.resources or "*" in statement.resources:
        return True
    return any((_arn_service(r) or ("", ""))[0] in _WILDCARD_SERVICES for r in statement.resources)


def _redundant_statements(found: Findings, parsed: list[tuple[Path, Statement, dict[str, Any]]]) -> None:
    seen: dict[str, Path] = {}
    for path, _, item in parsed:
        body = {k: v for k, v in item.items() if k != "Sid"}
        fingerprint = json.dumps(body, sort_keys=True)
        if fingerprint in seen:
            found.add(
                "SUGGESTION",
                "REDUNDANT_STATEMENT",
                "The statement is redundant because it provides identical permissions to another statement "
                "in the policy.",
                path,
            )
        else:
            seen[fingerprint] = path


def validate_policy(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy_type = params["policyType"]
    if policy_type not in ("IDENTITY_POLICY", "RESOURCE_POLICY"):
        raise errors.validation(
            f"Khoa validates IDENTITY_POLICY and RESOURCE_POLICY documents, not {policy_type}."
        )
    resource_type = params.get("validatePolicyResourceType")
    if resource_type is not None and policy_type != "RESOURCE_POLICY":
        raise errors.validation("validatePolicyResourceType is only valid with policyType RESOURCE_POLICY.")
    findings = validate(params["policyDocument"], policy_type, resource_type)
    fingerprint = f"{policy_type}:{resource_type}:{len(params['policyDocument'])}"
    items, token = page(findings, params.get("maxResults"), params.get("nextToken"), fingerprint)
    result: dict[str, Any] = {"findings": items}
    if token:
        result["nextToken"] = token
    return result


OPERATIONS = {"ValidatePolicy": validate_policy}
