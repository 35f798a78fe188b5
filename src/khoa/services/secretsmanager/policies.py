"""Resource policies on secrets: put, get, delete, list, validate, and BlockPublicPolicy.

Policies are stored and validated now; the identity issue makes them decide access.
"""

from __future__ import annotations

import json
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names
from khoa.services.secretsmanager.store import SecretRecord

DEFAULT_POLICY_NAME = "default"
_RESTRICTING_KEYS = {
    "aws:sourceaccount",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:principalarn",
    "aws:sourceowner",
    "aws:userid",
    "aws:sourceip",
    "aws:vpcsourceip",
    "aws:principalorgpaths",
}
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


def _parse(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError:
        raise errors.malformed_policy("This resource policy contains a syntax error.") from None
    if not isinstance(document, dict):
        raise errors.malformed_policy("This resource policy contains a syntax error.")
    return document


def _statements(document: dict[str, Any]) -> list[Any]:
    statements = document.get("Statement")
    if isinstance(statements, dict):
        return [statements]
    return statements if isinstance(statements, list) else []


def findings(document: dict[str, Any]) -> list[dict[str, str]]:
    """Problems in a policy, as ValidateResourcePolicy reports them."""
    problems: list[dict[str, str]] = []

    def add(message: str) -> None:
        problems.append({"CheckName": "SYNTAX_CHECK", "ErrorMessage": message})

    version = document.get("Version")
    if version not in (None, "2012-10-17", "2008-10-17"):
        add(f"The policy version {version} is not supported.")
    statements = _statements(document)
    if not statements:
        add("The policy must contain at least one statement.")
    for index, statement in enumerate(statements):
        if not isinstance(statement, dict):
            add(f"Statement {index} must be a JSON object.")
            continue
        for key in sorted(set(statement) - _STATEMENT_KEYS):
            add(f"Statement {index} has an unsupported element: {key}.")
        if statement.get("Effect") not in ("Allow", "Deny"):
            add(f"Statement {index} must have an Effect of Allow or Deny.")
        if "Principal" not in statement and "NotPrincipal" not in statement:
            add(f"Statement {index} must have a Principal: a resource policy names who it applies to.")
        if "Action" not in statement and "NotAction" not in statement:
            add(f"Statement {index} must have an Action.")
    return problems


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        found: list[str] = []
        for value in principal.values():
            found.extend([value] if isinstance(value, str) else list(value))
        return found
    return []


def is_public(document: dict[str, Any]) -> bool:
    """An Allow to every principal with no condition pinning accounts, organisations or networks."""
    for statement in _statements(document):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if "NotPrincipal" in statement:
            return True
        if "*" not in _principals(statement):
            continue
        condition = statement.get("Condition") or {}
        keys = {k.lower() for operator in condition.values() if isinstance(operator, dict) for k in operator}
        if not keys & _RESTRICTING_KEYS:
            return True
    return False


def _policies(record: SecretRecord) -> dict[str, str]:
    return json.loads(record.resource_policy) if record.resource_policy else {}


def _writable_name(params: dict[str, Any]) -> str:
    """Only the ``default`` policy can be attached or deleted."""
    name: str = params.get("PolicyName", DEFAULT_POLICY_NAME)
    if name != DEFAULT_POLICY_NAME:
        raise errors.invalid_parameter(
            f"You can only modify the {DEFAULT_POLICY_NAME} resource policy; {name} can't be changed."
        )
    return name


def put_resource_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _writable_name(params)
    record = names.require(ctx, ctx.runtime.secrets.store, params["SecretId"])
    document = _parse(params["ResourcePolicy"])
    problems = findings(document)
    if problems:
        raise errors.malformed_policy(problems[0]["ErrorMessage"])
    if params.get("BlockPublicPolicy", False) and is_public(document):
        raise errors.public_policy()
    policies = _policies(record)
    policies[name] = params["ResourcePolicy"]
    ctx.runtime.secrets.store.update(
        record.secret_id, resource_policy=json.dumps(policies), last_changed_at=ctx.now.timestamp()
    )
    return {"ARN": record.arn, "Name": record.name, "PolicyName": name}


def get_resource_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, ctx.runtime.secrets.store, params["SecretId"], allow_deleted=True)
    name = params.get("PolicyName", DEFAULT_POLICY_NAME)
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    policy = _policies(record).get(name)
    if policy is None and name != DEFAULT_POLICY_NAME:
        raise errors.not_found(f"Secrets Manager can't find the resource policy {name}.")
    if policy is not None:
        result["ResourcePolicy"] = policy
        result["PolicyName"] = name
    return result


def delete_resource_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _writable_name(params)
    record = names.require(ctx, ctx.runtime.secrets.store, params["SecretId"], allow_deleted=True)
    policies = _policies(record)
    policies.pop(name, None)
    ctx.runtime.secrets.store.update(
        record.secret_id,
        resource_policy=json.dumps(policies) if policies else None,
        last_changed_at=ctx.now.timestamp(),
    )
    return {"ARN": record.arn, "Name": record.name, "PolicyName": name}


def list_resource_policies(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, ctx.runtime.secrets.store, params["SecretId"], allow_deleted=True)
    # default first, then the others in alphabetical order
    ordered = sorted(_policies(record), key=lambda n: (n != DEFAULT_POLICY_NAME, n))
    offset = 0
    if params.get("NextToken"):
        try:
            offset = int(params["NextToken"])
        except ValueError:
            raise errors.invalid_next_token() from None
        if offset < 0:
            raise errors.invalid_next_token()
    limit = params.get("MaxResults", 100)
    result: dict[str, Any] = {
        "ResourcePolicies": [{"PolicyName": n} for n in ordered[offset : offset + limit]]
    }
    if offset + limit < len(ordered):
        result["NextToken"] = str(offset + limit)
    return result


def validate_resource_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("SecretId"):
        names.require(ctx, ctx.runtime.secrets.store, params["SecretId"], allow_deleted=True)
    problems = findings(_parse(params["ResourcePolicy"]))
    return {"PolicyValidationPassed": not problems, "ValidationErrors": problems}


OPERATIONS = {
    "PutResourcePolicy": put_resource_policy,
    "GetResourcePolicy": get_resource_policy,
    "DeleteResourcePolicy": delete_resource_policy,
    "ListResourcePolicies": list_resource_policies,
    "ValidateResourcePolicy": validate_resource_policy,
}
