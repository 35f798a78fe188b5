"""Key rotation: automatic (scheduled by the job runner) and on demand. Old material keeps decrypting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.kms import errors, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.keys import change_key, generate_material
from khoa.services.kms.resolve import current_key, decode_marker, encode_marker, resolve_key, state_error
from khoa.services.kms.store import KeyChanged, KeyRecord, VersionLimitReached

DEFAULT_ROTATION_PERIOD_DAYS = 365
MAX_ON_DEMAND_ROTATIONS = 25
_DAY = 86400.0


def _rotatable(kms: KmsBackend, ctx: RequestContext, ref: str, operation: str) -> KeyRecord:
    key = resolve_key(kms, ctx, ref, allow_alias=False)
    if key.key_spec != specs.SYMMETRIC:
        raise errors.unsupported(
            f"{key.arn} key spec is {key.key_spec}, which is not valid for {operation}: "
            "only symmetric encryption KMS keys rotate."
        )
    if key.origin != "AWS_KMS":
        raise errors.unsupported(f"{key.arn} origin is {key.origin} which is not valid for this operation.")
    return key


_ENABLED = ("Enabled",)
# A rotation that keeps finding its key changed by others gives up (ConflictException) after this many.
_ATTEMPTS = 5


def _require_enabled(key: KeyRecord) -> None:
    problem = state_error(key)
    if problem is not None:
        raise problem


def _rotation_changeable(key: KeyRecord) -> None:
    _require_enabled(key)
    if key.key_manager == "AWS":
        raise errors.unsupported(f"{key.arn} is an AWS managed key: its rotation cannot be changed.")


def enable_key_rotation(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(kms, ctx, params["KeyId"], "EnableKeyRotation")
    _rotation_changeable(key)
    period = params.get("RotationPeriodInDays", key.rotation_period_days or DEFAULT_ROTATION_PERIOD_DAYS)
    next_at = ctx.now.timestamp() + period * _DAY
    change_key(
        kms,
        key,
        _ENABLED,
        _rotation_changeable,
        rotation_enabled=True,
        rotation_period_days=period,
        next_rotation_at=next_at,
    )
    return {}


def disable_key_rotation(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(kms, ctx, params["KeyId"], "DisableKeyRotation")
    change_key(kms, key, _ENABLED, _rotation_changeable, rotation_enabled=False, next_rotation_at=None)
    return {}


def get_key_rotation_status(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(kms, ctx, params["KeyId"], "GetKeyRotationStatus")
    if key.state == "PendingDeletion":
        raise errors.invalid_state(f"{key.arn} is pending deletion.")
    result: dict[str, Any] = {"KeyRotationEnabled": key.rotation_enabled, "KeyId": key.arn}
    if key.rotation_enabled:
        result["RotationPeriodInDays"] = key.rotation_period_days
        result["NextRotationDate"] = from_epoch(key.next_rotation_at)
    if key.on_demand_started_at is not None:
        result["OnDemandRotationStartDate"] = from_epoch(key.on_demand_started_at)
    return result


def rotate_key_on_demand(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _rotatable(kms, ctx, params["KeyId"], "RotateKeyOnDemand")
    if key.key_manager == "AWS":
        _require_enabled(key)
        raise errors.unsupported(f"{key.arn} is an AWS managed key: it cannot be rotated on demand.")
    material = generate_material(key.key_spec)
    for _ in range(_ATTEMPTS):
        _require_enabled(key)
        # The store numbers the new version and counts the on-demand ones with the key's row claimed,
        # and only while the key is Enabled: concurrent rotations of one key each make their own
        # version, one after the other, and the limit holds across them.
        try:
            kms.store.keys.add_version(
                key.key_id,
                material,
                ctx.now.timestamp(),
                "ON_DEMAND",
                when={"state": _ENABLED},
                max_of_type=MAX_ON_DEMAND_ROTATIONS,
            )
        except KeyChanged:
            key = current_key(kms, key)
            continue
        except VersionLimitReached:
            raise errors.limit_exceeded(
                f"{key.arn} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations."
            ) from None
        except IntegrityError:
            # Another rotation of the key numbered its version the same (a database that let both
            # read before either wrote): KMS's answer to a rotation in progress.
            raise errors.conflict(f"A rotation of {key.arn} is in progress. Try again later.") from None
        return {"KeyId": key.arn}
    raise errors.conflict(f"{key.arn} is being changed by other requests. Try again.")


def list_key_rotations(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    if key.key_spec != specs.SYMMETRIC:
        raise errors.unsupported(
            f"{key.arn} key spec is {key.key_spec}, which is not valid for ListKeyRotations."
        )
    include_all = params.get("IncludeKeyMaterial") == "ALL_KEY_MATERIAL"
    versions = [v for v in kms.store.keys.versions(key.key_id) if include_all or v.rotation_type]
    limit = params.get("Limit", 100)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    page = versions[offset : offset + limit]
    rotations = []
    for version in page:
        entry: dict[str, Any] = {"KeyId": key.arn, "KeyMaterialId": version.version_id}
        if version.rotation_type:
            # AWS omits RotationDate and RotationType for the key's first material.
            entry["RotationDate"] = from_epoch(version.created_at)
            entry["RotationType"] = version.rotation_type
        entry["KeyMaterialState"] = (
            "CURRENT" if version.version_id == key.current_version_id else "NON_CURRENT"
        )
        rotations.append(entry)
    truncated = offset + limit < len(versions)
    result: dict[str, Any] = {"Rotations": rotations, "Truncated": truncated}
    if truncated:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


def rotate_due_keys(backend: KmsBackend, now: float) -> list[str]:
    """The job for automatic rotation: each enabled key whose period has passed gets new material."""
    rotated = []
    for key in backend.store.keys.due("next_rotation_at", now):
        if not key.rotation_enabled or key.state != "Enabled":
            continue
        period = key.rotation_period_days or DEFAULT_ROTATION_PERIOD_DAYS
        # Only the rotation that was read as due: a DisableKey, DisableKeyRotation or another run of
        # this job that committed since leaves the key alone.
        still_due = {"state": "Enabled", "rotation_enabled": True, "next_rotation_at": key.next_rotation_at}
        try:
            backend.store.keys.add_version(
                key.key_id,
                generate_material(key.key_spec),
                now,
                "AUTOMATIC",
                when=still_due,
                next_rotation_at=now + timedelta(days=period).total_seconds(),
            )
        except KeyChanged:
            continue
        rotated.append(key.key_id)
    return rotated


OPERATIONS = {
    "EnableKeyRotation": enable_key_rotation,
    "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status,
    "RotateKeyOnDemand": rotate_key_on_demand,
    "ListKeyRotations": list_key_rotations,
}
