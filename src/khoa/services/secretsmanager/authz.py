"""Authorising Secrets Manager requests: ``secretsmanager:<Operation>`` on the secret's ARN, with the
secret's resource policies and the Secrets Manager condition keys.

The condition keys are those the Service Authorization Reference ("Actions, resources, and condition keys
for AWS Secrets Manager") lists, each for the operations it lists it for:

- on every operation on a secret: ``secretsmanager:SecretId``, ``secretsmanager:ResourceTag/<key>``
  (and ``aws:ResourceTag/<key>``), ``secretsmanager:resource/AllowRotationLambdaArn`` (the secret's
  rotation function), ``secretsmanager:resource/Type`` and ``secretsmanager:SecretPrimaryRegion`` (a
  replicated secret's primary Region), each only when the secret has one;
- from the request: ``Name``, ``Description``, ``KmsKeyId`` and ``KmsKeyArn`` (the key named, resolved),
  ``Type``, ``VersionId``, ``VersionStage``, ``RotationLambdaARN``, ``ExternalSecretRotationRoleArn``,
  ``BlockPublicPolicy``, ``AddReplicaRegions`` (the Regions), ``ForceOverwriteReplicaSecret``,
  ``ForceDeleteWithoutRecovery``, ``RecoveryWindowInDays``, ``RotateImmediately`` and
  ``ModifyRotationRules``, with ``aws:RequestTag/<key>`` and ``aws:TagKeys``.

A Bool or Numeric key of an operation whose parameter has a default is given the value the operation
acts on when the parameter is left out (RotateImmediately true, the force flags and BlockPublicPolicy
false, a 30-day recovery window; ModifyRotationRules says whether RotationRules was sent): a Deny written
on the key then also matches the request that relies on the default, instead of failing open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from khoa.access.directory import parsed
from khoa.access.policy import VARIABLES_VERSION, Policy, Statement, deny_all
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import errors, names, values
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretRecord

_UNSCOPED = ("ListSecrets", "GetRandomPassword", "BatchGetSecretValue")
# DeleteSecret's recovery window when neither RecoveryWindowInDays nor ForceDeleteWithoutRecovery is sent.
_DEFAULT_RECOVERY_DAYS = 30
Context = dict[str, list[str]]
Tags = list[dict[str, str]]


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


def _request_tags(params: dict[str, Any], context: Context) -> None:
    tags = params.get("Tags")
    if tags:
        if any("Key" not in t or "Value" not in t for t in tags):  # optional in the model
            raise errors.invalid_parameter("Each tag must have a Key and a Value.")
        context["aws:tagkeys"] = [t["Key"] for t in tags]
        # The value each key is stored with (a key given twice keeps its last value) ...
        for key, value in {t["Key"]: t["Value"] for t in tags}.items():
            # ... and, condition key names being case-insensitive while tag keys are not, the values of
            # keys differing only in case all kept (tags.validate_tags then refuses such a request),
            # never one silently dropped.
            context.setdefault(f"aws:requesttag/{key.lower()}", []).append(value)
    if params.get("TagKeys"):
        context["aws:tagkeys"] = list(params["TagKeys"])


def _flag(value: Any) -> list[str]:
    return ["true" if value else "false"]


def _kms_key_arn(
    sm: SecretsBackend, ctx: RequestContext, key_ref: Any, record: SecretRecord | None
) -> list[str] | None:
    """``secretsmanager:KmsKeyArn``: the ARN of the key the request names (an ID, alias or ARN), resolved
    where the handler resolves it: in the secret's account and region (``record``; the caller's for a
    new secret). None when it names none (the AWS-managed default) or one that does not resolve: the
    handler then refuses the request itself, so nothing is done under a key the policy never saw."""
    if not key_ref or not isinstance(key_ref, str):
        return None
    account, region = (ctx.account_id, ctx.region) if record is None else (record.account_id, record.region)
    try:
        return [values.secret_key(sm.keys, ctx, account, region, key_ref).arn]
    except AWSError:
        return None


def _request_keys(
    sm: SecretsBackend,
    ctx: RequestContext,
    action: str,
    params: dict[str, Any],
    context: Context,
    record: SecretRecord | None = None,
) -> None:
    """The request's own condition keys, for the operations the Service Authorization Reference lists
    each of them for (``record``: the secret the request is on; None for CreateSecret)."""
    for name, key in (
        ("VersionStage", "secretsmanager:versionstage"),
        ("VersionId", "secretsmanager:versionid"),
        ("KmsKeyId", "secretsmanager:kmskeyid"),
        ("Description", "secretsmanager:description"),
        ("RotationLambdaARN", "secretsmanager:rotationlambdaarn"),
    ):
        if params.get(name) is not None:
            context[key] = [str(params[name])]
    operation = action.split(":", 1)[1]
    if operation in ("CreateSecret", "UpdateSecret"):
        if params.get("Type") is not None:
            context["secretsmanager:type"] = [str(params["Type"])]
        key_arn = _kms_key_arn(sm, ctx, params.get("KmsKeyId"), record)
        if key_arn is not None:
            context["secretsmanager:kmskeyarn"] = key_arn
    if operation in ("CreateSecret", "ReplicateSecretToRegions"):
        regions = [
            str(spec.get("Region")) for spec in params.get("AddReplicaRegions") or [] if spec.get("Region")
        ]
        if regions:
            context["secretsmanager:addreplicaregions"] = regions
        context["secretsmanager:forceoverwritereplicasecret"] = _flag(
            params.get("ForceOverwriteReplicaSecret")
        )
    elif operation == "DeleteSecret":
        force = bool(params.get("ForceDeleteWithoutRecovery"))
        context["secretsmanager:forcedeletewithoutrecovery"] = _flag(force)
        window = params.get("RecoveryWindowInDays")
        if window is not None:
            context["secretsmanager:recoverywindowindays"] = [str(window)]
        elif not force:
            context["secretsmanager:recoverywindowindays"] = [str(_DEFAULT_RECOVERY_DAYS)]
    elif operation == "RotateSecret":
        # "By default, Secrets Manager rotates the secret immediately" (RotateSecret API reference).
        immediately = params.get("RotateImmediately")
        context["secretsmanager:rotateimmediately"] = _flag(True if immediately is None else immediately)
        context["secretsmanager:modifyrotationrules"] = _flag(params.get("RotationRules") is not None)
        if params.get("ExternalSecretRotationRoleArn") is not None:
            context["secretsmanager:externalsecretrotationrolearn"] = [
                str(params["ExternalSecretRotationRoleArn"])
            ]
    elif operation == "PutResourcePolicy":
        context["secretsmanager:blockpublicpolicy"] = _flag(params.get("BlockPublicPolicy"))
    _request_tags(params, context)


def authorize_secret(
    sm: SecretsBackend, ctx: RequestContext, action: str, record: SecretRecord, params: dict[str, Any]
) -> None:
    """Raise AccessDeniedException unless ``action`` on the secret is allowed: its resource policies,
    tags and the request's Secrets Manager condition keys take part. Also used by the reads that go
    through Secrets Manager from elsewhere (BatchGetSecretValue's entries, Parameter Store references,
    change-stream subscriptions)."""
    _authorize_on(sm, ctx, action, record, params, None)


def secret_allows(
    sm: SecretsBackend, ctx: RequestContext, action: str, record: SecretRecord, params: dict[str, Any]
) -> bool:
    """Whether :func:`authorize_secret` would let ``action`` on the secret through (without raising):
    for a handler that must know whether its caller may act on a second secret before telling it
    anything about that secret."""
    return sm.authorizer.decide(
        ctx,
        action,
        record.arn,
        resource_account=record.account_id,
        resource_policy=_merged_policy(record),
        context=lambda: _secret_context(sm, ctx, action, record, params),
    ).allowed


def _authorize_on(
    sm: SecretsBackend,
    ctx: RequestContext,
    action: str,
    record: SecretRecord,
    params: dict[str, Any],
    tags: Tags | None,
) -> None:
    """:func:`authorize_secret`, with the secret's tags taken as ``tags`` when given (the tags a tag
    change would leave it with) rather than read from the store."""
    sm.authorizer.authorize(
        ctx,
        action,
        record.arn,
        resource_account=record.account_id,
        resource_policy=_merged_policy(record),
        context=lambda: _secret_context(sm, ctx, action, record, params, tags),
    )


def _secret_context(
    sm: SecretsBackend,
    ctx: RequestContext,
    action: str,
    record: SecretRecord,
    params: dict[str, Any],
    tags: Tags | None = None,
) -> Context:
    context: Context = {
        "secretsmanager:secretid": [record.arn],
        "secretsmanager:name": [record.name],
    }
    for tag in (sm.store.tags(record.secret_id) if tags is None else tags) or []:
        # Tag keys differing only in case (which TagResource now refuses, but a secret may hold from
        # before) give one condition key all their values: a Deny on any of them still matches.
        key = tag["Key"].lower()
        context.setdefault(f"secretsmanager:resourcetag/{key}", []).append(tag["Value"])
        context.setdefault(f"aws:resourcetag/{key}", []).append(tag["Value"])
    if record.rotation_lambda_arn:
        context["secretsmanager:resource/allowrotationlambdaarn"] = [record.rotation_lambda_arn]
    if record.secret_type:
        context["secretsmanager:resource/type"] = [record.secret_type]
    # Set on a replica (its primary's Region) and on a primary while it has replicas (its own).
    if record.primary_region:
        context["secretsmanager:secretprimaryregion"] = [record.primary_region]
    _request_keys(sm, ctx, action, params, context, record)
    return context


def _once(build: Callable[[], Context]) -> Callable[[], Context]:
    """``build``, evaluated on first use only (the context of several checks of one request)."""
    made: list[Context] = []

    def get() -> Context:
        if not made:
            made.append(build())
        return made[0]

    return get


def _authorize_create(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    """CreateSecret on the ARN the new secret would have; with Tags it also needs
    secretsmanager:TagResource and with AddReplicaRegions secretsmanager:ReplicateSecretToRegions
    (CreateSecret API reference, "Required permissions"), checked before anything is created."""
    name = params.get("Name", "")
    arn = f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:{name}-??????"

    def build() -> Context:
        context: Context = {"secretsmanager:name": [name]}
        _request_keys(sm, ctx, "secretsmanager:CreateSecret", params, context)
        return context

    context = _once(build)
    sm.authorizer.authorize(ctx, "secretsmanager:CreateSecret", arn, context=context)
    if params.get("Tags"):
        sm.authorizer.authorize(ctx, "secretsmanager:TagResource", arn, context=context)
    if params.get("AddReplicaRegions"):
        sm.authorizer.authorize(ctx, "secretsmanager:ReplicateSecretToRegions", arn, context=context)


def authorize_request(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The check of every Secrets Manager operation (authtable.py)."""
    action = f"secretsmanager:{ctx.operation}"
    if ctx.operation in _UNSCOPED or (
        ctx.operation == "ValidateResourcePolicy" and not params.get("SecretId")
    ):
        sm.authorizer.authorize(ctx, action, "*")
        if ctx.operation == "BatchGetSecretValue" and params.get("Filters"):
            # "If you use filters, you must also have secretsmanager:ListSecrets" (BatchGetSecretValue
            # API reference): the filters choose among secrets the caller names nowhere, so the answer
            # (its Errors name each match it may not read) is a listing.
            sm.authorizer.authorize(ctx, "secretsmanager:ListSecrets", "*")
        return {}
    if ctx.operation == "CreateSecret":
        _authorize_create(sm, ctx, params)
        return {}
    secret_id = params.get("SecretId", "")
    record = names.find(ctx, sm.store, secret_id)
    if record is None:
        sm.authorizer.authorize(ctx, action, "*")
        return {}
    authorize_secret(sm, ctx, action, record, params)
    names.note_found(ctx, secret_id, record)
    if ctx.operation in ("TagResource", "UntagResource"):
        _refuse_lockout(sm, ctx, action, record, params)
    if ctx.operation == "RotateSecret":
        _authorize_rotation_function(
            sm, ctx, record, params.get("RotationLambdaARN") or record.rotation_lambda_arn
        )
    return {}


def _tags_after(current: Tags | None, operation: str, params: dict[str, Any]) -> Tags:
    """The secret's tags once TagResource (add or overwrite, by exact key) or UntagResource would have
    run."""
    tags = {t["Key"]: t["Value"] for t in current or []}
    if operation == "TagResource":
        for tag in params.get("Tags") or []:
            if "Key" in tag and "Value" in tag:
                tags[tag["Key"]] = tag["Value"]
    else:
        for key in params.get("TagKeys") or []:
            tags.pop(key, None)
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _refuse_lockout(
    sm: SecretsBackend, ctx: RequestContext, action: str, record: SecretRecord, params: dict[str, Any]
) -> None:
    """TagResource and UntagResource API references: "If successfully completing this operation would
    result in you losing your permissions for this secret, then the operation is blocked and returns an
    Access Denied error." AWS does not say which permissions; Khoa re-checks the one permission the
    caller has just been found to hold, the operation itself, against the tags the secret would be
    left with, so a tag change can never take from its author the means to change the tags back. A
    refusal is AccessDeniedException, before anything is written."""
    after = _tags_after(sm.store.tags(record.secret_id), action.split(":", 1)[1], params)
    _authorize_on(sm, ctx, action, record, params, after)


def _authorize_rotation_function(
    sm: SecretsBackend, ctx: RequestContext, record: SecretRecord, function_arn: str | None
) -> None:
    """RotateSecret also needs ``lambda:InvokeFunction`` on the function it will run (AWS's API
    reference: "You also need lambda:InvokeFunction permissions on the rotation function").

    Why it matters here: a rotation function acts with the role it was registered with, which may read
    other secrets (an alternating-users rotator reads the master secret its target names). Without this
    check anyone allowed to rotate one secret of their own could point a powerful function at it and
    borrow that role: a confused deputy. Only a well-formed Lambda ARN is evaluated; the handler
    answers a malformed one with its own validation error.

    A function of another account than the secret's is refused outright, as AWS refuses a function
    whose policy does not let Secrets Manager invoke it: Khoa has no Lambda function policies, so no
    function can grant that to a secret of another account (nor ``lambda:InvokeFunction`` to a caller of
    another account: the permission is evaluated in the function's account).
    """
    arn = function_arn or ""
    parts = arn.split(":")
    if len(parts) < 7 or parts[:3] != ["arn", "aws", "lambda"]:
        return
    function_account = parts[4]
    if function_account != record.account_id:
        raise errors.cannot_invoke_function()
    sm.authorizer.authorize(ctx, "lambda:InvokeFunction", arn, resource_account=function_account)
