"""Access keys: CreateAccessKey, ListAccessKeys, UpdateAccessKey, DeleteAccessKey, GetAccessKeyLastUsed.

The secret is returned once, by CreateAccessKey, and stored only sealed by the barrier (bound to its key
ID), which lets Khoa verify signatures. Without UserName these act on the caller: an IAM user's own keys,
or the account root's keys when the root calls, as in AWS.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.bootstrap import access_key_binding, generate_access_key_id, generate_secret_access_key
from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity
from khoa.services.iam.names import USER
from khoa.services.iam.store import KeyOwner


def _owner(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> KeyOwner:
    principal = ctx.principal
    name = params.get("UserName")
    if name is None and principal.is_root:
        return KeyOwner("Root", "root", None)
    if name is None:
        if principal.kind != "IAMUser":
            raise errors.needs_user_name()
        name = principal.name
    row = lookup_entity(iam.store, ctx, USER, name)
    return KeyOwner("IAMUser", row.name, row.name, row.principal_id)


def _metadata(row: Row[Any], owner: KeyOwner) -> dict[str, Any]:
    return {
        "UserName": owner.user_name,
        "AccessKeyId": row.access_key_id,
        "Status": row.status,
        "CreateDate": row.created_at,
    }


def create_access_key(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(iam, ctx, params)
    access_key_id = generate_access_key_id()
    secret = generate_secret_access_key()
    created = ctx.now.timestamp()
    sealed = iam.barrier.seal(secret.encode(), access_key_binding(access_key_id))
    leak_fingerprints: list[tuple[str | None, str]] = []
    if iam.fingerprinter is not None:
        # Leak detection knows the key by its secret only: the id is no secret (ListAccessKeys and the
        # trail show it), so finding it proves nothing; khoa-leaks finds ids by the rows' key id.
        leak_fingerprints = [(None, iam.fingerprinter.digest(secret))]
    iam.store.keys.create(ctx.account_id, owner, access_key_id, sealed, created, leak_fingerprints)
    return {
        "AccessKey": {
            "UserName": owner.user_name,
            "AccessKeyId": access_key_id,
            "Status": "Active",
            "SecretAccessKey": secret,
            "CreateDate": created,
        }
    }


def list_access_keys(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(iam, ctx, params)
    page, meta = paging.paginate(iam.store.keys.of_owner(ctx.account_id, owner), params)
    return {"AccessKeyMetadata": [_metadata(r, owner) for r in page], **meta}


def _owned_key(iam: IamBackend, ctx: RequestContext, owner: KeyOwner, access_key_id: str) -> Row[Any]:
    for row in iam.store.keys.of_owner(ctx.account_id, owner):
        if row.access_key_id == access_key_id:
            return row
    raise errors.access_key_not_found(access_key_id)


def update_access_key(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(iam, ctx, params)
    status = params["Status"]
    if status not in ("Active", "Inactive"):
        raise errors.invalid_input(f"Invalid status {status}: an access key is Active or Inactive.")
    key = _owned_key(iam, ctx, owner, params["AccessKeyId"])
    iam.store.keys.set_status(key.access_key_id, status)
    return {}


def delete_access_key(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(iam, ctx, params)
    key = _owned_key(iam, ctx, owner, params["AccessKeyId"])
    iam.store.keys.delete(key.access_key_id)
    return {}


def get_access_key_last_used(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """When and where a key was last used, read from the audit trail (N/A when it never was)."""
    access_key_id = params["AccessKeyId"]
    key = iam.store.keys.find(ctx.account_id, access_key_id)
    if key is None or key.principal_kind not in ("IAMUser", "Root"):
        raise errors.access_key_not_found(access_key_id)
    user_name = None
    if key.principal_kind != "Root":
        user_name = lookup_entity(iam.store, ctx, USER, key.principal_name).name
    last = iam.store.usage.access_key_last_use(ctx.account_id, access_key_id)
    used: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
    if last is not None:
        used = {
            "LastUsedDate": last.event_time,
            "ServiceName": last.event_source.removesuffix(".amazonaws.com"),
            "Region": last.region,
        }
    return {"UserName": user_name, "AccessKeyLastUsed": used}


OPERATIONS = {
    "CreateAccessKey": create_access_key,
    "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key,
    "DeleteAccessKey": delete_access_key,
    "GetAccessKeyLastUsed": get_access_key_last_used,
}
