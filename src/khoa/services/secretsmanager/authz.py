"""Authorising Secrets Manager requests: ``secretsmanager:<Operation>`` on the secret's ARN, with the
secret's resource policies and the Secrets Manager condition keys."""

from __future__ import annotations

import json
from typing import Any

from khoa.access.directory import parsed
from khoa.access.policy import VARIABLES_VERSION, Policy, Statement, deny_all
from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretRecord

_UNSCOPED = ("ListSecrets", "GetRandomPassword", "BatchGetSecretValue")


def _merged_policy(record: SecretRecord) -> Policy | None:
    """All of the secret's resource policies as one, each read by the one strict parser.

    A stored document that does not parse (written by an older version, or behind Khoa's back) is
    read as an explicit deny of everything (``deny_all``), never skipped: skipping it would drop its
    Deny statements.
    """
    if not record.resource_policy:
        return None
    try:
        documents = json.loads(record.resource_policy)
    except ValueError:
        documents = None
    if not isinstance(documents, dict) or not all(isinstance(d, str) for d in documents.values()):
        return deny_all("resource")
    statements: list[Statement] = []
    for document in documents.values():
        statements.extend(parsed(document, "resource").statements)
    return Policy(tuple(statements), "resource", VARIABLES_VERSION)


def _request_tags(params: dict[str, Any], context: dict[str, list[str]]) -> None:
    tags = params.get("Tags")
    if tags:
        if any("Key" not in t or "Value" not in t for t in tags):  # optional in the model
            raise errors.invalid_parameter("Each tag must have a Key and a Value.")
        context["aws:tagkeys"] = [t["Key"] for t in tags]
        for tag in tags:
            context[f"aws:requesttag/{tag['Key'].lower()}"] = [tag["Value"]]
    if params.get("TagKeys"):
        context["aws:tagkeys"] = list(params["TagKeys"])


def authorize_secret(
    sm: SecretsBackend, ctx: RequestContext, action: str, record: SecretRecord, params: dict[str, Any]
) -> None:
    """Raise AccessDeniedException unless ``action`` on the secret is allowed: its resource policies,
    tags and the request's Secrets Manager condition keys take part. Also used by the reads that go
    through Secrets Manager from elsewhere (BatchGetSecretValue's entries, Parameter Store references,
    change-stream subscriptions)."""
    sm.authorizer.authorize(
        ctx,
        action,
        record.arn,
        resource_account=record.account_id,
        resource_policy=_merged_policy(record),
        context=lambda: _secret_context(sm, record, params),
    )


def _secret_context(sm: SecretsBackend, record: SecretRecord, params: dict[str, Any]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {
        "secretsmanager:secretid": [record.arn],
        "secretsmanager:name": [record.name],
    }
    for tag in sm.store.tags(record.secret_id) or []:
        context[f"secretsmanager:resourcetag/{tag['Key'].lower()}"] = [tag["Value"]]
        context[f"aws:resourcetag/{tag['Key'].lower()}"] = [tag["Value"]]
    for name, key in (
        ("VersionStage", "secretsmanager:versionstage"),
        ("VersionId", "secretsmanager:versionid"),
        ("KmsKeyId", "secretsmanager:kmskeyid"),
        ("Description", "secretsmanager:description"),
        ("RotationLambdaARN", "secretsmanager:rotationlambdaarn"),
    ):
        if params.get(name) is not None:
            context[key] = [str(params[name])]
    if "BlockPublicPolicy" in params:
        context["secretsmanager:blockpublicpolicy"] = [str(params["BlockPublicPolicy"]).lower()]
    _request_tags(params, context)
    return context


def authorize_request(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The check of every Secrets Manager operation (authtable.py)."""
    action = f"secretsmanager:{ctx.operation}"
    if ctx.operation in _UNSCOPED or (
        ctx.operation == "ValidateResourcePolicy" and not params.get("SecretId")
    ):
        sm.authorizer.authorize(ctx, action, "*")
        return {}
    if ctx.operation == "CreateSecret":
        name = params.get("Name", "")
        context: dict[str, list[str]] = {"secretsmanager:name": [name]}
        if params.get("KmsKeyId"):
            context["secretsmanager:kmskeyid"] = [params["KmsKeyId"]]
        _request_tags(params, context)
        sm.authorizer.authorize(
            ctx,
            action,
            f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:{name}-??????",
            context=context,
        )
        return {}
    record = names.find(ctx, sm.store, params.get("SecretId", ""))
    if record is None:
        sm.authorizer.authorize(ctx, action, "*")
        return {}
    authorize_secret(sm, ctx, action, record, params)
    if ctx.operation == "RotateSecret":
        _authorize_rotation_function(sm, ctx, params.get("RotationLambdaARN") or record.rotation_lambda_arn)
    return {}


def _authorize_rotation_function(sm: SecretsBackend, ctx: RequestContext, function_arn: str | None) -> None:
    """RotateSecret also needs ``lambda:InvokeFunction`` on the function it will run (AWS's API
    reference: "You also need lambda:InvokeFunction permissions on the rotation function").

    Why it matters here: a rotation function acts with the role it was registered with, which may read
    other secrets (an alternating-users rotator reads the master secret its target names). Without this
    check anyone allowed to rotate one secret of their own could point a powerful function at it and
    borrow that role: a confused deputy. Only a well-formed Lambda ARN is evaluated; the handler
    answers a malformed one with its own validation error.
    """
    if function_arn and function_arn.startswith("arn:aws:lambda:"):
        sm.authorizer.authorize(ctx, "lambda:InvokeFunction", function_arn)
