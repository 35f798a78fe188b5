"""Authorising KMS requests: key policies (required), IAM policies, grants, and KMS condition keys.

Runs before each handler. It names the key(s) a request touches exactly as the handler will (so a
missing key still gets the handler's NotFoundException), and evaluates ``kms:<Operation>`` against
the key policy with the KMS condition keys AWS defines. Grants are consulted when policies do not
allow: a grant for the caller that lists the operation (and whose encryption-context constraints hold)
allows it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from khoa.crypto import ciphertext
from khoa.iam.authorize import access_denied, decide
from khoa.iam.evaluate import Decision
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms.resolve import alias_arn, alias_target, kms, resolve_key
from khoa.services.kms.store import KeyRecord
from khoa.storage import schema

_ALIAS_OPERATIONS = ("CreateAlias", "UpdateAlias", "DeleteAlias")
_ALGORITHM_PARAMS = {
    "EncryptionAlgorithm": "kms:encryptionalgorithm",
    "SigningAlgorithm": "kms:signingalgorithm",
    "MacAlgorithm": "kms:macalgorithm",
    "KeyAgreementAlgorithm": "kms:keyagreementalgorithm",
}


def request_context(
    ctx: RequestContext,
    params: dict[str, Any],
    key: KeyRecord | None,
    encryption_context: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {"kms:calleraccount": [ctx.account_id]}
    if key is not None:
        context["kms:keyspec"] = [key.key_spec]
        context["kms:keyusage"] = [key.key_usage]
        context["kms:keyorigin"] = [key.origin]
        context["kms:multiregion"] = ["false"]
        if "resourcetag" in key.policy.lower() or not ctx.principal.is_root:
            from khoa.services.kms.tags import tags_of

            for tag_key, tag_value in tags_of(kms(ctx).engine, key.key_id).items():
                context[f"aws:resourcetag/{tag_key.lower()}"] = [tag_value]
    else:
        for name in ("KeySpec", "KeyUsage", "Origin"):
            if name in params:
                context["kms:keyorigin" if name == "Origin" else f"kms:{name.lower()}"] = [params[name]]
    for name, key_name in _ALGORITHM_PARAMS.items():
        if name in params:
            context[key_name] = [params[name]]
    reference = params.get("KeyId")
    if isinstance(reference, str) and "alias/" in reference:
        context["kms:requestalias"] = [reference[reference.index("alias/") :]]
    encryption_context = (
        encryption_context if encryption_context is not None else params.get("EncryptionContext")
    )
    if encryption_context:
        context["kms:encryptioncontextkeys"] = list(encryption_context)
        for ec_key, ec_value in encryption_context.items():
            context[f"kms:encryptioncontext:{ec_key.lower()}"] = [ec_value]
    tags = params.get("Tags")
    if isinstance(tags, list) and tags and isinstance(tags[0], dict) and "TagKey" in tags[0]:
        context["aws:tagkeys"] = [t["TagKey"] for t in tags]
        for tag in tags:
            context[f"aws:requesttag/{tag['TagKey'].lower()}"] = [tag.get("TagValue", "")]
    if ctx.operation == "CreateGrant":
        context["kms:grantoperations"] = list(params.get("Operations", []))
        if params.get("GranteePrincipal"):
            context["kms:granteeprincipal"] = [params["GranteePrincipal"]]
        if params.get("RetiringPrincipal"):
            context["kms:retiringprincipal"] = [params["RetiringPrincipal"]]
    return context


def _grant_allows(
    ctx: RequestContext, key: KeyRecord, operation: str, encryption_context: dict[str, str] | None
) -> bool:
    principal = ctx.principal
    names = {principal.arn}
    if principal.kind == "AssumedRole":
        names.add(f"arn:aws:iam::{principal.account_id}:role/{principal.name}")
    grants = schema.kms_grants
    with kms(ctx).engine.connect() as conn:
        rows = conn.execute(
            select(grants.c.operations, grants.c.constraints)
            .where(grants.c.key_id == key.key_id)
            .where(grants.c.grantee_principal.in_(names))
        ).all()
    supplied = encryption_context or {}
    for operations, constraints in rows:
        if operation not in json.loads(operations):
            continue
        if constraints:
            rules = json.loads(constraints)
            subset = rules.get("EncryptionContextSubset")
            equals = rules.get("EncryptionContextEquals")
            if subset is not None and any(supplied.get(k) != v for k, v in subset.items()):
                continue
            if equals is not None and supplied != equals:
                continue
        return True
    return False


def authorize_key(
    ctx: RequestContext,
    action: str,
    key: KeyRecord,
    params: dict[str, Any],
    encryption_context: dict[str, str] | None = None,
) -> None:
    context = request_context(ctx, params, key, encryption_context)
    decision = decide(
        ctx,
        action,
        key.arn,
        resource_account=key.account_id,
        resource_policy=key.policy,
        key_policy=True,
        context=context,
    )
    if decision.allowed:
        return
    operation = action.split(":", 1)[1]
    if not decision.explicit_deny and _grant_allows(
        ctx, key, operation, encryption_context or params.get("EncryptionContext")
    ):
        return
    raise access_denied(ctx, action, key.arn, decision)


def _authorize_unscoped(ctx: RequestContext, action: str, resource: str, params: dict[str, Any]) -> None:
    decision: Decision = decide(ctx, action, resource, context=request_context(ctx, params, None))
    if not decision.allowed:
        raise access_denied(ctx, action, resource, decision)


def _key_or_none(ctx: RequestContext, ref: str, *, allow_alias: bool = True) -> KeyRecord | None:
    try:
        return resolve_key(ctx, ref, allow_alias=allow_alias)
    except AWSError:
        return None  # the handler reports the missing key with the right error


def _blob_key(ctx: RequestContext, blob: bytes) -> KeyRecord | None:
    try:
        parsed = ciphertext.parse(blob)
    except ciphertext.InvalidCiphertext:
        return None
    return kms(ctx).keys.by_blob(ctx.region, parsed.key_id)


def authorize_request(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _authorize_request(ctx, params)
    return {}


def _authorize_request(ctx: RequestContext, params: dict[str, Any]) -> None:
    operation = ctx.operation
    action = f"kms:{operation}"
    if operation in _ALIAS_OPERATIONS:
        name = params.get("AliasName", "")
        _authorize_unscoped(ctx, action, alias_arn(ctx, name), params)
        targets = []
        if operation != "CreateAlias":
            current = alias_target(ctx, name)
            if current is not None:
                targets.append(current)
        if "TargetKeyId" in params:
            target = _key_or_none(ctx, params["TargetKeyId"], allow_alias=False)
            if target is not None:
                targets.append(target.key_id)
        for key_id in dict.fromkeys(targets):
            key = kms(ctx).keys.get(ctx.account_id, ctx.region, key_id)
            if key is not None:
                authorize_key(ctx, action, key, params)
        return
    if operation == "ReEncrypt":
        source = (
            _key_or_none(ctx, params["SourceKeyId"])
            if params.get("SourceKeyId")
            else _blob_key(ctx, params.get("CiphertextBlob", b""))
        )
        if source is not None:
            authorize_key(ctx, "kms:ReEncryptFrom", source, params, params.get("SourceEncryptionContext"))
        destination = _key_or_none(ctx, params.get("DestinationKeyId", ""))
        if destination is not None:
            authorize_key(
                ctx, "kms:ReEncryptTo", destination, params, params.get("DestinationEncryptionContext")
            )
        return
    if operation == "Decrypt" and not params.get("KeyId"):
        key = _blob_key(ctx, params.get("CiphertextBlob", b""))
        if key is not None:
            authorize_key(ctx, action, key, params)
        return
    reference = params.get("KeyId")
    if not reference:
        _authorize_unscoped(ctx, action, "*", params)
        return
    key = _key_or_none(ctx, reference)
    if key is not None:
        authorize_key(ctx, action, key, params)
