"""Key lifecycle: CreateKey, DescribeKey, ListKeys, description, enable/disable, scheduled deletion."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from khoa.clock import from_epoch
from khoa.crypto import keymaterial
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors, external, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.custom_key_stores import SUPPORTED, check_external_key, store_state
from khoa.services.kms.policy_doc import check_lockout, default_key_policy, validate_key_policy
from khoa.services.kms.resolve import (
    current_key,
    decode_marker,
    encode_marker,
    require_customer_managed,
    require_not_pending_deletion,
    resolve_key,
)
from khoa.services.kms.store import KeyRecord, new_material_id
from khoa.services.kms.store.custom_key_stores import ExternalKeyInUse
from khoa.services.kms.tags import validate_tags

DEFAULT_PENDING_WINDOW_DAYS = 30
# AWS KMS resource quota "AWS KMS keys" (developer guide, Resource quotas): customer managed keys per
# account and Region, whatever their state; AWS managed keys do not count. CreateKey beyond it is
# refused with LimitExceededException. Checked before the key is made (CreateKey runs on a request
# thread; concurrent creations may pass it together, by at most their number).
MAX_CUSTOMER_KEYS_PER_REGION = 100_000

# The key states each kind of change may start from (AWS's "Key states of AWS KMS keys" table, for
# the states Khoa stores). A change is written only if the key is still in one of them when it is
# written, so of two racing calls the later is judged on what the earlier did (a ScheduleKeyDeletion
# after another is refused, a DisableKey never undoes a deletion scheduled after it was read).
NOT_PENDING_DELETION = ("Enabled", "Disabled", "PendingImport")
ENABLED_OR_DISABLED = ("Enabled", "Disabled")
# A change that keeps finding its key changed by others gives up (ConflictException) after this many.
_ATTEMPTS = 5


def change_key(
    kms: KmsBackend,
    key: KeyRecord,
    allowed: tuple[str, ...],
    check: Callable[[KeyRecord], None],
    **values: Any,
) -> KeyRecord:
    """Write ``values`` to ``key`` if its state is one of ``allowed`` when written. ``check`` raises
    the error for a key it may not change (and passes only states in ``allowed``); when the write
    finds the key changed since it was read, ``check`` judges it again as it is now. The key as it
    was changed."""
    for _ in range(_ATTEMPTS):
        check(key)
        if kms.store.keys.update(key.key_id, when={"state": allowed}, **values):
            return key
        key = current_key(kms, key)
    raise errors.conflict(f"{key.arn} is being changed by other requests. Try again.")


def generate_material(spec: str, generate_rsa: Callable[[int], bytes] = keymaterial.generate_rsa) -> bytes:
    """New key material for ``spec`` (``generate_rsa``: KmsBackend.generate_rsa, which waits for the
    node's gate, for a key made by a request)."""
    if spec == specs.SYMMETRIC:
        return keymaterial.random_bytes(32)
    if spec in specs.HMAC_SPECS:
        return keymaterial.random_bytes(specs.HMAC_SPECS[spec])
    if spec in specs.RSA_SPECS:
        return generate_rsa(specs.RSA_SPECS[spec])
    return keymaterial.generate_ec(specs.ECC_SPECS[spec])


def key_metadata(key: KeyRecord, kms: KmsBackend | None = None) -> dict[str, Any]:
    """DescribeKey's KeyMetadata; with ``kms``, a key in an external key store also shows its store,
    its external key and, while the store is not connected, the key state ``Unavailable``."""
    meta: dict[str, Any] = {
        "AWSAccountId": key.account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created,
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "Origin": key.origin,
        "KeyManager": key.key_manager,
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "MultiRegion": key.multi_region,
    }
    meta.update(specs.algorithms(key.key_spec, key.key_usage))
    if key.state == "PendingDeletion":
        meta["DeletionDate"] = from_epoch(key.deletion_date)
        meta["PendingDeletionWindowInDays"] = key.pending_window_days
    if key.origin == "EXTERNAL" and key.state != "PendingImport" and key.expiration_model:
        # AWS reports ExpirationModel only while the key has imported material.
        meta["ExpirationModel"] = key.expiration_model
        if key.valid_to is not None:
            meta["ValidTo"] = from_epoch(key.valid_to)
    if kms is not None and key.origin == external.ORIGIN:
        link = kms.store.custom_key_stores.link_of(key.key_id)
        if link is not None:
            meta["CustomKeyStoreId"] = link.store_id
            meta["XksKeyConfiguration"] = {"Id": link.xks_key_id}
            connected = store_state(kms, key.account_id, key.region, link.store_id) == "CONNECTED"
            if not connected and key.state in ("Enabled", "Disabled"):
                meta["KeyState"] = "Unavailable"
    if key.current_version_id and key.state != "PendingImport" and key.key_spec == specs.SYMMETRIC:
        # Only symmetric encryption keys report their current key material (KeyMetadata docs).
        meta["CurrentKeyMaterialId"] = key.current_version_id
    return meta


def _choose_spec(params: dict[str, Any]) -> str:
    if "KeySpec" in params and "CustomerMasterKeySpec" in params:
        raise errors.validation(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
            "CustomerMasterKeySpec is deprecated."
        )
    spec: str = params.get("KeySpec") or params.get("CustomerMasterKeySpec") or specs.SYMMETRIC
    if spec not in specs.ALLOWED_USAGES:
        raise errors.unsupported(f"KeySpec {spec} is not supported by Khoa.")
    return spec


def create_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    spec = _choose_spec(params)
    if spec != specs.SYMMETRIC and "KeyUsage" not in params:
        raise errors.validation(
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
        )
    usage = params.get("KeyUsage", "ENCRYPT_DECRYPT")
    if usage not in specs.ALLOWED_USAGES[spec]:
        raise errors.validation(f"KeyUsage {usage} is not compatible with KeySpec {spec}")
    origin = params.get("Origin", "AWS_KMS")
    if params.get("MultiRegion"):
        raise errors.unsupported("Multi-Region keys are not supported by Khoa.")
    in_store = _check_custom_key_store(params, origin, spec, usage)
    policy = params.get("Policy")
    parsed_policy = validate_key_policy(kms, policy) if policy is not None else None
    tags = params.get("Tags", [])
    validate_tags(tags)
    _check_key_quota(kms, ctx)
    now = ctx.now.timestamp()
    key_id = str(uuid.uuid4())
    external = origin == "EXTERNAL"
    material = None if external else generate_material(spec, kms.generate_rsa)
    record = KeyRecord(
        key_id=key_id,
        account_id=ctx.account_id,
        region=ctx.region,
        description=params.get("Description", ""),
        key_spec=spec,
        key_usage=usage,
        origin=origin,
        key_manager="CUSTOMER",
        state="PendingImport" if external else "Enabled",
        created_at=now,
        deletion_date=None,
        pending_window_days=None,
        policy=policy or default_key_policy(ctx.account_id),
        rotation_enabled=False,
        rotation_period_days=None,
        next_rotation_at=None,
        on_demand_started_at=None,
        current_version_id=None if external else new_material_id(),
        valid_to=None,
        expiration_model=None,
        multi_region=False,
    )
    if parsed_policy is not None:
        check_lockout(kms, ctx, record, parsed_policy, params)
    if in_store is not None:
        check_external_key(kms, ctx, in_store[0], in_store[1], record.arn)
    kms.store.keys.insert(record, material, now, tags={t["TagKey"]: t.get("TagValue", "") for t in tags})
    if in_store is not None:
        try:
            kms.store.custom_key_stores.link(key_id, in_store[0], in_store[1])
        except ExternalKeyInUse:  # another CreateKey took the external key in between
            kms.store.keys.destroy(key_id)
            raise AWSError(
                "XksKeyAlreadyInUseException",
                f"External key {in_store[1]} is already associated with a KMS key in custom key store "
                f"{in_store[0]}.",
            ) from None
    return {"KeyMetadata": key_metadata(record, kms)}


def _check_key_quota(kms: KmsBackend, ctx: RequestContext) -> None:
    limit = MAX_CUSTOMER_KEYS_PER_REGION
    if kms.store.keys.customer_managed_count(ctx.account_id, ctx.region, at_least=limit) >= limit:
        raise errors.limit_exceeded(
            f"This account has reached the limit of {limit} customer managed KMS keys in {ctx.region}."
        )


def _check_custom_key_store(
    params: dict[str, Any], origin: str, spec: str, usage: str
) -> tuple[str, str] | None:
    """(CustomKeyStoreId, XksKeyId) of a key to create in an external key store, else None."""
    store_id, xks_key_id = params.get("CustomKeyStoreId"), params.get("XksKeyId")
    if origin == "AWS_CLOUDHSM":
        raise errors.unsupported(f"Origin AWS_CLOUDHSM is not supported. {SUPPORTED}")
    if origin != external.ORIGIN:
        if store_id is not None or xks_key_id is not None:
            raise errors.unsupported(
                "To create a KMS key in an external key store, specify Origin=EXTERNAL_KEY_STORE with "
                f"CustomKeyStoreId and XksKeyId. {SUPPORTED}"
            )
        return None
    if store_id is None:
        raise errors.validation("CustomKeyStoreId is required when Origin is EXTERNAL_KEY_STORE.")
    if xks_key_id is None:
        raise errors.validation("XksKeyId is required when Origin is EXTERNAL_KEY_STORE.")
    if spec != specs.SYMMETRIC or usage != "ENCRYPT_DECRYPT":
        raise errors.unsupported(
            "KMS keys in an external key store must be SYMMETRIC_DEFAULT keys with KeyUsage ENCRYPT_DECRYPT."
        )
    return store_id, xks_key_id


def describe_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"KeyMetadata": key_metadata(resolve_key(kms, ctx, params["KeyId"]), kms)}


def list_keys(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    limit = params.get("Limit", 100)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    page = kms.store.keys.list_page(ctx.account_id, ctx.region, limit + 1, offset)
    result: dict[str, Any] = {
        "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page[:limit]],
        "Truncated": len(page) > limit,
    }
    if len(page) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


def _customer_managed_not_pending_deletion(operation: str) -> Callable[[KeyRecord], None]:
    def check(key: KeyRecord) -> None:
        require_customer_managed(key, operation)
        require_not_pending_deletion(key)

    return check


def update_key_description(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    check = _customer_managed_not_pending_deletion("UpdateKeyDescription")
    change_key(kms, key, NOT_PENDING_DELETION, check, description=params["Description"])
    return {}


def _enable_or_disable(operation: str) -> Callable[[KeyRecord], None]:
    def check(key: KeyRecord) -> None:
        require_customer_managed(key, operation)
        require_not_pending_deletion(key)
        if key.state == "PendingImport":
            raise errors.invalid_state(f"{key.arn} is pending import.")

    return check


def enable_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    change_key(kms, key, ENABLED_OR_DISABLED, _enable_or_disable("EnableKey"), state="Enabled")
    return {}


def disable_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    change_key(kms, key, ENABLED_OR_DISABLED, _enable_or_disable("DisableKey"), state="Disabled")
    return {}


def schedule_key_deletion(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    days = params.get("PendingWindowInDays", DEFAULT_PENDING_WINDOW_DAYS)
    if not 7 <= days <= 30:
        bound = "greater than or equal to 7" if days < 7 else "less than or equal to 30"
        raise errors.validation(
            f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' "
            f"failed to satisfy constraint: Member must have value {bound}"
        )
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    deletion = ctx.now + timedelta(days=days)
    # Only from a state other than PendingDeletion, checked by the write: of concurrent calls one
    # schedules the deletion, and the others are refused as AWS refuses a key already pending it.
    key = change_key(
        kms,
        key,
        NOT_PENDING_DELETION,
        _customer_managed_not_pending_deletion("ScheduleKeyDeletion"),
        state="PendingDeletion",
        deletion_date=deletion.timestamp(),
        pending_window_days=days,
    )
    return {
        "KeyId": key.arn,
        "DeletionDate": deletion,
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    }


def cancel_key_deletion(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    for _ in range(_ATTEMPTS):
        if key.state != "PendingDeletion":
            raise errors.invalid_state(f"{key.arn} is not pending deletion.")
        # A key with no key material (an EXTERNAL key never imported, or whose material was deleted)
        # returns to PendingImport, as in AWS; every other key comes back Disabled. Decided by the
        # store from the database (not a worker's cache of opened material, which may predate a
        # deletion), and only while the key is still pending deletion: of concurrent cancellations
        # one succeeds, and a key the deletion job destroyed first is not found.
        if kms.store.keys.cancel_deletion(key.key_id) is not None:
            return {"KeyId": key.arn}
        key = current_key(kms, key)
    raise errors.conflict(f"{key.arn} is being changed by other requests. Try again.")


def get_key_policy(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    name = params.get("PolicyName", "default")
    if name != "default":
        raise errors.not_found("No such policy exists")
    return {"Policy": key.policy, "PolicyName": "default"}


def put_key_policy(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_customer_managed(key, "PutKeyPolicy")
    if params.get("PolicyName", "default") != "default":
        raise errors.not_found("No such policy exists")
    parsed_policy = validate_key_policy(kms, params["Policy"])
    require_not_pending_deletion(key)
    check_lockout(kms, ctx, key, parsed_policy, params)
    change_key(
        kms,
        key,
        NOT_PENDING_DELETION,
        _customer_managed_not_pending_deletion("PutKeyPolicy"),
        policy=params["Policy"],
    )
    return {}


def list_key_policies(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    if params.get("Marker"):
        raise errors.invalid_marker()  # the one page is never truncated: no marker was ever issued
    return {"PolicyNames": ["default"], "Truncated": False}


def destroy_due_keys(backend: KmsBackend, now: float) -> list[str]:
    """The job that ends a deletion window: the key and its material are gone for good."""
    destroyed = []
    for key in backend.store.keys.due("deletion_date", now):
        # Only the deletion that was read: a CancelKeyDeletion (or a new schedule after it) that
        # committed since keeps the key.
        still_due = {"state": "PendingDeletion", "deletion_date": key.deletion_date}
        if key.state == "PendingDeletion" and backend.store.keys.destroy(key.key_id, when=still_due):
            destroyed.append(key.key_id)
    return destroyed


OPERATIONS = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ListKeys": list_keys,
    "UpdateKeyDescription": update_key_description,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "GetKeyPolicy": get_key_policy,
    "PutKeyPolicy": put_key_policy,
    "ListKeyPolicies": list_key_policies,
}
