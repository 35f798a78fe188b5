"""Authorising Secrets Manager requests: ``secretsmanager:<Operation>`` on the secret's ARN, with the
secret's resource policies and the Secrets Manager condition keys."""

from __future__ import annotations

import json
from typing import Any

from khoa.iam.authorize import authorize
from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import names
from khoa.services.secretsmanager.store import SecretRecord

_UNSCOPED = ("ListSecrets", "GetRandomPassword", "BatchGetSecretValue")


def _merged_policy(record: SecretRecord) -> str | None:
    if not record.resource_policy:
        return None
    statements: list[Any] = []
    for document in json.loads(record.resource_policy).values():
        raw = json.loads(document).get("Statement", [])
        statements.extend(raw if isinstance(raw, list) else [raw])
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _request_tags(params: dict[str, Any], context: dict[str, list[str]]) -> None:
    tags = params.get("Tags")
    if tags:
        context["aws:tagkeys"] = [t["Key"] for t in tags]
        for tag in tags:
            context[f"aws:requesttag/{tag['Key'].lower()}"] = [tag["Value"]]
    if params.get("TagKeys"):
        context["aws:tagkeys"] = list(params["TagKeys"])


def authorize_secret(ctx: RequestContext, action: str, record: SecretRecord, params: dict[str, Any]) -> None:
    authorize(
        ctx,
        action,
        record.arn,
        resource_account=record.account_id,
        resource_policy=_merged_policy(record),
        context=lambda: _secret_context(ctx, record, params),
    )


def _secret_context(
    ctx: RequestContext, record: SecretRecord, params: dict[str, Any]
) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {
        "secretsmanager:secretid": [record.arn],
        "secretsmanager:name": [record.name],
    }
    for tag in ctx.runtime.secrets.store.tags(record.secret_id):
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


def authorize_request(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    action = f"secretsmanager:{ctx.operation}"
    if ctx.operation in _UNSCOPED or (
        ctx.operation == "ValidateResourcePolicy" and not params.get("SecretId")
    ):
        authorize(ctx, action, "*")
        return {}
    if ctx.operation == "CreateSecret":
        name = params.get("Name", "")
        context: dict[str, list[str]] = {"secretsmanager:name": [name]}
        if params.get("KmsKeyId"):
            context["secretsmanager:kmskeyid"] = [params["KmsKeyId"]]
        _request_tags(params, context)
        authorize(
            ctx,
            action,
            f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:{name}-??????",
            context=context,
        )
        return {}
    record = names.find(ctx, ctx.runtime.secrets.store, params.get("SecretId", ""))
    if record is None:
        authorize(ctx, action, "*")
        return {}
    authorize_secret(ctx, action, record, params)
    return {}
