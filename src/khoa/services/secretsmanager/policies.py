"""Resource policies on secrets: put, get, delete, list, validate, and BlockPublicPolicy.

Every document goes through the one policy parser (khoa.access.policy); what it refuses is never stored,
and ValidateResourcePolicy reports exactly the parser's error. BlockPublicPolicy asks khoa.access.public
whether the parsed policy grants broad access.
"""

from __future__ import annotations

import json
from typing import Any

from khoa.access.policy import (
    SECRET_POLICY_MAX_CHARS,
    Policy,
    PolicyError,
    load_json,
    refuse_allow_not_principal,
)
from khoa.access.public import is_public
from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretRecord

DEFAULT_POLICY_NAME = "default"


def _document(text: str) -> Any:
    """The JSON of a resource policy; text that is not a JSON object is refused outright."""
    if len(text) > SECRET_POLICY_MAX_CHARS:
        raise errors.malformed_policy(
            f"The resource policy is larger than {SECRET_POLICY_MAX_CHARS} characters."
        )
    try:
        data = load_json(text)
    except PolicyError:
        raise errors.malformed_policy("This resource policy contains a syntax error.") from None
    if not isinstance(data, dict):
        raise errors.malformed_policy("This resource policy contains a syntax error.")
    return data


def _grammar(data: Any) -> Policy:
    """The one policy parser; a secret's resource policy names a principal in every statement, and
    NotPrincipal goes only with Deny (Allow + NotPrincipal would grant everyone not listed)."""
    policy = Policy.parse(data, "resource", require_principal=True)
    refuse_allow_not_principal(policy)
    return policy


def parse_resource_policy(text: str) -> Policy:
    """Parse a resource policy for writing, or raise MalformedPolicyDocumentException."""
    try:
        return _grammar(_document(text))
    except PolicyError as exc:
        raise errors.malformed_policy(str(exc)) from None


def findings(text: str) -> list[dict[str, str]]:
    """What ValidateResourcePolicy reports: the parser's own error, as a SYNTAX_CHECK failure."""
    try:
        _grammar(_document(text))
    except PolicyError as exc:
        return [{"CheckName": "SYNTAX_CHECK", "ErrorMessage": str(exc)}]
    return []


def _policies(record: SecretRecord) -> dict[str, str]:
    """The stored policies by name. Storage that is not such a map (never written by Khoa) reads as
    none here, so the account root can replace it; authorisation reads it as a deny (authz.py)."""
    if not record.resource_policy:
        return {}
    try:
        stored = json.loads(record.resource_policy)
    except ValueError:
        return {}
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        return {}
    return stored


def _writable_name(params: dict[str, Any]) -> str:
    """Only the ``default`` policy can be attached or deleted."""
    name: str = params.get("PolicyName", DEFAULT_POLICY_NAME)
    if name != DEFAULT_POLICY_NAME:
        raise errors.invalid_parameter(
            f"You can only modify the {DEFAULT_POLICY_NAME} resource policy; {name} can't be changed."
        )
    return name


def put_resource_policy(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _writable_name(params)
    record = names.require(ctx, sm.store, params["SecretId"])
    parsed = parse_resource_policy(params["ResourcePolicy"])
    if sm.authorizer.directory.missing_principals(parsed):
        # AWS binds each user and role a policy names to its unique ID as it saves it: one that does
        # not exist cannot be named (khoa.access.forgotten keeps the binding when one is deleted).
        raise errors.malformed_policy("This resource policy contains an unsupported principal.")
    if params.get("BlockPublicPolicy", False) and is_public(parsed):
        raise errors.public_policy()
    policies = _policies(record)
    policies[name] = params["ResourcePolicy"]
    sm.store.update(
        record.secret_id, resource_policy=json.dumps(policies), last_changed_at=ctx.now.timestamp()
    )
    return {"ARN": record.arn, "Name": record.name, "PolicyName": name}


def get_resource_policy(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    name = params.get("PolicyName", DEFAULT_POLICY_NAME)
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    policy = _policies(record).get(name)
    if policy is None and name != DEFAULT_POLICY_NAME:
        raise errors.not_found(f"Secrets Manager can't find the resource policy {name}.")
    if policy is not None:
        result["ResourcePolicy"] = policy
        result["PolicyName"] = name
    return result


def delete_resource_policy(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _writable_name(params)
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    policies = _policies(record)
    policies.pop(name, None)
    sm.store.update(
        record.secret_id,
        resource_policy=json.dumps(policies) if policies else None,
        last_changed_at=ctx.now.timestamp(),
    )
    return {"ARN": record.arn, "Name": record.name, "PolicyName": name}


def list_resource_policies(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    # default first, then the others in alphabetical order
    ordered = sorted(_policies(record), key=lambda n: (n != DEFAULT_POLICY_NAME, n))
    offset = 0
    if params.get("NextToken"):
        token = params["NextToken"]
        # Only a token this listing issues: ASCII digits naming a position inside the list.
        if not (token.isascii() and token.isdigit() and len(token) <= 9) or not 0 < int(token) < len(ordered):
            raise errors.invalid_next_token()
        offset = int(token)
    limit = params.get("MaxResults", 100)
    result: dict[str, Any] = {
        "ResourcePolicies": [{"PolicyName": n} for n in ordered[offset : offset + limit]]
    }
    if offset + limit < len(ordered):
        result["NextToken"] = str(offset + limit)
    return result


def validate_resource_policy(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    if params.get("SecretId"):
        names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    problems = findings(params["ResourcePolicy"])
    return {"PolicyValidationPassed": not problems, "ValidationErrors": problems}


OPERATIONS = {
    "PutResourcePolicy": put_resource_policy,
    "GetResourcePolicy": get_resource_policy,
    "DeleteResourcePolicy": delete_resource_policy,
    "ListResourcePolicies": list_resource_policies,
    "ValidateResourcePolicy": validate_resource_policy,
}
