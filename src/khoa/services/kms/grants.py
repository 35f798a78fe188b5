"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.

A grant lets its grantee perform the listed operations on one key (see ``authz``, which consults
grants when policies do not allow, and ``grant_rules`` for what a grant admits). Two handlers depend
on *how* the authoriser allowed them: CreateGrant allowed only by grants may create nothing wider than
those grants, and RetireGrant retires exactly the grant the authoriser resolved and allowed.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import Row

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.kms import authz, errors, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.grant_rules import (
    CONTEXT_OPERATIONS,
    check_constraint_size,
    grant_id_from_token,
    make_grant_token,
)
from khoa.services.kms.resolve import (
    decode_marker,
    encode_marker,
    require_not_pending_deletion,
    resolve_key,
)
from khoa.services.kms.store import KeyRecord, key_arn
from khoa.services.kms.store.grants import GrantQuotaExceeded

__all__ = [
    "MAX_GRANTS_PER_KEY",
    "OPERATIONS",
    "check_grant_tokens",
    "grant_id_from_token",
    "make_grant_token",
]

# AWS KMS resource quota "Grants per KMS key" (developer guide, Resource quotas): a CreateGrant beyond
# it is refused with LimitExceededException.
MAX_GRANTS_PER_KEY = 50_000


def check_grant_tokens(tokens: list[str]) -> None:
    """Grant tokens must be tokens Khoa issued; their grants take effect immediately."""
    for token in tokens:
        grant_id_from_token(token)


_ANY_KEY = {"CreateGrant", "RetireGrant", "DescribeKey"}
# The grant operations each kind of key supports (AWS KMS developer guide, key type reference).
_GRANT_OPERATIONS = {
    # A symmetric key does every operation that takes an encryption context.
    "SYMMETRIC": _ANY_KEY | CONTEXT_OPERATIONS,
    "ENCRYPT_DECRYPT": _ANY_KEY | {"Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey"},
    "SIGN_VERIFY": _ANY_KEY | {"Sign", "Verify", "GetPublicKey"},
    "KEY_AGREEMENT": _ANY_KEY | {"DeriveSharedSecret", "GetPublicKey"},
    "GENERATE_VERIFY_MAC": _ANY_KEY | {"GenerateMac", "VerifyMac"},
}


def _check_grant_fits_key(key: KeyRecord, operations: list[str], constraints: dict[str, Any] | None) -> None:
    """AWS refuses (ValidationException) grants for operations the key cannot perform."""
    kind = "SYMMETRIC" if key.key_spec == specs.SYMMETRIC else key.key_usage
    invalid = sorted(set(operations) - _GRANT_OPERATIONS.get(kind, _ANY_KEY))
    if invalid:
        raise errors.validation(
            f"Grant operations {invalid} are not valid for {key.arn}: its key spec is {key.key_spec} "
            f"and its key usage is {key.key_usage}."
        )
    if (
        constraints
        and kind != "SYMMETRIC"
        and ("EncryptionContextSubset" in constraints or "EncryptionContextEquals" in constraints)
    ):
        raise errors.validation(
            f"Encryption context grant constraints are not valid for {key.arn}: only symmetric "
            "encryption KMS keys take an encryption context."
        )


def _entry(row: Row[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "KeyId": key_arn(row.region, row.key_account, row.key_id),
        "GrantId": row.grant_id,
        "CreationDate": from_epoch(row.created_at),
        "GranteePrincipal": row.grantee_principal,
        "IssuingAccount": row.issuing_account,
        "Operations": json.loads(row.operations),
    }
    if row.name:
        entry["Name"] = row.name
    if row.retiring_principal:
        entry["RetiringPrincipal"] = row.retiring_principal
    if row.constraints:
        entry["Constraints"] = json.loads(row.constraints)
    return entry


def create_grant(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_grant_tokens(params.get("GrantTokens", []))
    grantee = params.get("GranteePrincipal") or params.get("GranteeServicePrincipal")
    if not grantee:
        raise errors.validation(
            "1 validation error detected: Value null at 'granteePrincipal' failed to "
            "satisfy constraint: Member must not be null"
        )
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_not_pending_deletion(key)
    if key.state == "PendingImport":
        raise errors.invalid_state(f"{key.arn} is pending import.")
    constraints = params.get("Constraints")
    if constraints and "EncryptionContextSubset" in constraints and "EncryptionContextEquals" in constraints:
        raise errors.validation(
            "Grant constraints can have EncryptionContextSubset or EncryptionContextEquals, not both."
        )
    check_constraint_size(constraints)
    _check_grant_fits_key(key, params["Operations"], constraints)
    # A grant is bound to its principals as AWS binds them (to their unique IDs; see
    # khoa.access.forgotten): naming a user or role that does not exist would leave a grant for
    # whoever is created under that name later.
    named = [params[name] for name in ("GranteePrincipal", "RetiringPrincipal") if params.get(name)]
    missing = kms.authorizer.directory.missing_entities(named)
    if missing:
        raise errors.invalid_arn(f"ARN does not refer to a valid principal: {missing[0]}")
    # Before DryRun and before a Name retry returns an existing grant: a caller whose CreateGrant
    # comes from grants learns nothing about grants it could not have created.
    authz.check_child_grant(ctx, key, params["Operations"], constraints)
    if params.get("DryRun"):
        raise errors.dry_run()
    operations = json.dumps(sorted(set(params["Operations"])))
    constraint_text = json.dumps(constraints, sort_keys=True) if constraints else None
    retiring = params.get("RetiringPrincipal") or params.get("RetiringServicePrincipal")
    name = params.get("Name")
    if name:
        same_name = kms.store.grants.named(key.key_id, name)
        # A name can label several grants (same name, different parameters); a retry of any of
        # those requests must find its own grant.
        for existing in same_name:
            if (
                existing.grantee_principal,
                existing.retiring_principal,
                existing.operations,
                existing.constraints,
            ) == (grantee, retiring, operations, constraint_text):
                return {"GrantToken": make_grant_token(existing.grant_id), "GrantId": existing.grant_id}
    try:
        # With a Name, the store answers with the grant of the same Name and parameters that a
        # concurrent retry stored first, if any (the check above misses one still being written).
        grant_id = kms.store.grants.add(
            grant_id=secrets.token_hex(32),
            key_id=key.key_id,
            account_id=ctx.account_id,
            name=name,
            grantee=grantee,
            retiring=retiring,
            operations=operations,
            constraints=constraint_text,
            issuing_account=f"arn:aws:iam::{ctx.account_id}:root",
            created_at=ctx.now.timestamp(),
            limit=MAX_GRANTS_PER_KEY,
        )
    except GrantQuotaExceeded:
        raise errors.limit_exceeded(
            f"{key.arn} has reached the limit of {MAX_GRANTS_PER_KEY} grants per KMS key."
        ) from None
    return {"GrantToken": make_grant_token(grant_id), "GrantId": grant_id}


def _page_bounds(ctx: RequestContext, params: dict[str, Any]) -> tuple[int, int]:
    """(limit, offset) of the page asked for; the marker is checked before any query."""
    return params.get("Limit", 50), decode_marker(params.get("Marker"), ctx.operation)


def _page(ctx: RequestContext, rows: list[Row[Any]], limit: int, offset: int) -> dict[str, Any]:
    """The response for ``rows``, fetched one beyond ``limit`` to tell whether more follow."""
    result: dict[str, Any] = {"Grants": [_entry(r) for r in rows[:limit]], "Truncated": len(rows) > limit}
    if len(rows) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


def list_grants(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    grantee = params.get("GranteePrincipal") or params.get("GranteeServicePrincipal")
    limit, offset = _page_bounds(ctx, params)
    rows = kms.store.grants.page_of_key(key.key_id, params.get("GrantId"), grantee, limit + 1, offset)
    return _page(ctx, rows, limit, offset)


def _retiring_principal(params: dict[str, Any]) -> str:
    principal = params.get("RetiringPrincipal") or params.get("RetiringServicePrincipal")
    if not principal:
        raise errors.validation(
            "1 validation error detected: Value null at 'retiringPrincipal' failed to "
            "satisfy constraint: Member must not be null"
        )
    return str(principal)


def list_retirable_grants(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Grants in this region naming the retiring principal. For a principal of the caller's account
    these include grants on other accounts' keys (as in AWS); for anything else, only grants on the
    caller's own keys, so nobody lists another account's grants by naming a principal."""
    principal = _retiring_principal(params)
    key_account = None if authz.retirable_scope(ctx, principal) else ctx.account_id
    limit, offset = _page_bounds(ctx, params)
    rows = kms.store.grants.page_retirable(ctx.region, principal, key_account, limit + 1, offset)
    return _page(ctx, rows, limit, offset)


def _delete_grant(kms: KmsBackend, key_id: str, grant_id: str) -> None:
    if not kms.store.grants.remove(key_id, grant_id):
        raise errors.not_found(f"Grant ID {grant_id} not found")


def retire_grant(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Retire the grant the authoriser resolved (from the token, or KeyId and GrantId) and allowed."""
    token = params.get("GrantToken")
    if token:
        grant_id_from_token(token)
    elif params.get("KeyId") and params.get("GrantId"):
        resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    else:
        raise errors.validation("Either GrantToken, or both KeyId and GrantId, must be specified.")
    key_id, grant_id = authz.authorized_retirement(ctx)
    if params.get("DryRun"):
        raise errors.dry_run()
    _delete_grant(kms, key_id, grant_id)
    return {}


def revoke_grant(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    if params.get("DryRun"):
        raise errors.dry_run()
    _delete_grant(kms, key.key_id, params["GrantId"])
    return {}


OPERATIONS = {
    "CreateGrant": create_grant,
    "ListGrants": list_grants,
    "ListRetirableGrants": list_retirable_grants,
    "RetireGrant": retire_grant,
    "RevokeGrant": revoke_grant,
}
