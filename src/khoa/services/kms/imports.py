"""Bring your own key: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial.

The wrapping private key lives only sealed in storage; imported material is sealed like generated
material, and only a digest is kept after deletion so that only the same material can come back.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from khoa.crypto import keymaterial
from khoa.crypto.keymaterial import CryptoFailure
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import current_key, require_not_pending_deletion, resolve_key
from khoa.services.kms.store import ImportParameters, KeyChanged, KeyRecord, MaterialMismatch

_VALID_FOR = timedelta(hours=24)
# An import or deletion that keeps finding its key changed by others gives up (ConflictException).
_ATTEMPTS = 5
_WRAPPING_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
_OAEP = {
    "RSAES_OAEP_SHA_1": "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256": "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1": "RSAES_OAEP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256": "RSAES_OAEP_SHA_256",
}


def _binding(token_id: str) -> str:
    return f"kms_import_parameters:{token_id}"


def _external(
    kms: KmsBackend, ctx: RequestContext, ref: str, *, allow_pending_deletion: bool = False
) -> KeyRecord:
    key = resolve_key(kms, ctx, ref, allow_alias=False)
    if key.origin != "EXTERNAL":
        raise errors.unsupported(f"{key.arn} origin is {key.origin} which is not valid for this operation.")
    if not allow_pending_deletion:
        require_not_pending_deletion(key)
    return key


def get_parameters_for_import(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _external(kms, ctx, params["KeyId"])
    algorithm = params["WrappingAlgorithm"]
    spec = params["WrappingKeySpec"]
    if algorithm not in _OAEP or spec not in _WRAPPING_BITS:
        raise errors.unsupported(f"Wrapping algorithm {algorithm} with {spec} is not supported by Khoa.")
    # AWS: RSAES_OAEP wraps every kind of key material except RSA private keys (too large for OAEP).
    if algorithm.startswith("RSAES_OAEP") and key.key_spec in specs.RSA_SPECS:
        raise errors.validation(
            f"{algorithm} cannot wrap {key.key_spec} key material: use "
            "RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256."
        )
    wrapping = kms.generate_rsa(_WRAPPING_BITS[spec])
    token_id = secrets.token_hex(32)
    valid_to = ctx.now + _VALID_FOR
    kms.store.imports.add(
        ImportParameters(
            token_id=token_id,
            key_id=key.key_id,
            wrapping_algorithm=algorithm,
            wrapping_key_sealed=kms.barrier.seal(wrapping, _binding(token_id)),
            valid_to=valid_to.timestamp(),
        )
    )
    return {
        "KeyId": key.arn,
        "ImportToken": bytes.fromhex(token_id),
        "PublicKey": keymaterial.public_key_der(wrapping),
        "ParametersValidTo": valid_to,
    }


def _unwrap(private: bytes, algorithm: str, wrapped: bytes) -> bytes:
    try:
        if algorithm.startswith("RSAES_OAEP"):
            return keymaterial.rsa_decrypt(private, _OAEP[algorithm], wrapped)
        size = keymaterial.rsa_modulus_bytes(private)
        aes_key = keymaterial.rsa_decrypt(private, _OAEP[algorithm], wrapped[:size])
        return aes_key_unwrap_with_padding(aes_key, wrapped[size:])
    except (CryptoFailure, InvalidUnwrap, ValueError):
        raise errors.invalid_ciphertext() from None


def _check_material(key: KeyRecord, material: bytes) -> None:
    if key.key_spec == specs.SYMMETRIC:
        ok = len(material) == 32
    elif key.key_spec in specs.HMAC_SPECS:
        ok = len(material) == specs.HMAC_SPECS[key.key_spec]
    else:
        try:
            ok = keymaterial.describe_private(material) == key.key_spec
        except CryptoFailure:
            ok = False
    if not ok:
        raise AWSError(
            "IncorrectKeyMaterialException",
            f"The key material is not valid {key.key_spec} key material for {key.arn}.",
        )


def import_key_material(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = _external(kms, ctx, params["KeyId"])
    model = params.get("ExpirationModel", "KEY_MATERIAL_EXPIRES")
    valid_to = params.get("ValidTo")
    if model == "KEY_MATERIAL_EXPIRES" and valid_to is None:
        raise errors.validation("A ValidTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES")
    if model == "KEY_MATERIAL_DOES_NOT_EXPIRE" and valid_to is not None:
        raise errors.validation(
            "A ValidTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE"
        )
    if valid_to is not None and not ctx.now < valid_to <= ctx.now + timedelta(days=365):
        raise errors.validation("ValidTo must be in the future and at most 365 days from now.")
    token_id = params["ImportToken"].hex()
    row = kms.store.imports.find(token_id)
    if row is None or row.key_id != key.key_id:
        raise AWSError("InvalidImportTokenException", "The import token is invalid for this key.")
    if row.valid_to < ctx.now.timestamp():
        raise AWSError("ExpiredImportTokenException", "The import token has expired.")
    wrapping = kms.barrier.open(row.wrapping_key_sealed, _binding(token_id))
    material = _unwrap(wrapping, row.wrapping_algorithm, params["EncryptedKeyMaterial"])
    _check_material(key, material)
    previous = kms.store.keys.material_digest(key.key_id)
    digest = hashlib.sha256(b"khoa-material-digest" + material).hexdigest()
    if previous is not None and previous != digest:
        raise _different_material(key)
    for _ in range(_ATTEMPTS):
        # Written only while the key is in the state read (a ScheduleKeyDeletion or DisableKey that
        # committed since is not undone: the import is judged again on the key as it is now), and
        # the material compared again with the key's row claimed.
        try:
            version_id = kms.store.keys.set_imported_material(
                key.key_id,
                material,
                ctx.now.timestamp(),
                when={"state": key.state},
                # Importing restores material; it never undoes DisableKey (only EnableKey does).
                state="Disabled" if key.state == "Disabled" else "Enabled",
                expiration_model=model,
                valid_to=valid_to.timestamp() if valid_to is not None else None,
            )
        except KeyChanged:
            key = current_key(kms, key)
            require_not_pending_deletion(key)
            continue
        except MaterialMismatch:
            raise _different_material(key) from None
        return {"KeyId": key.arn, "KeyMaterialId": version_id}
    raise errors.conflict(f"{key.arn} is being changed by other requests. Try again.")


def _different_material(key: KeyRecord) -> AWSError:
    return AWSError(
        "IncorrectKeyMaterialException",
        "The key material in the request is different from the key material previously "
        f"imported into {key.arn}.",
    )


def delete_imported_key_material(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    # AWS: allowed on a key pending deletion, whose state then stays PendingDeletion.
    key = _external(kms, ctx, params["KeyId"], allow_pending_deletion=True)
    for _ in range(_ATTEMPTS):
        state = "PendingDeletion" if key.state == "PendingDeletion" else "PendingImport"
        # Only from the state read: a deletion scheduled since stays scheduled.
        if kms.store.keys.drop_imported_material(
            key.key_id, when={"state": key.state}, state=state, valid_to=None
        ):
            break
        key = current_key(kms, key)
    else:
        raise errors.conflict(f"{key.arn} is being changed by other requests. Try again.")
    kms.store.imports.forget_key(key.key_id)
    result: dict[str, Any] = {"KeyId": key.arn}
    if key.current_version_id:
        result["KeyMaterialId"] = key.current_version_id
    return result


def expire_imported_material(backend: KmsBackend, now: float) -> list[str]:
    """The job for ValidTo: expired imported material is deleted and the key waits for a new import."""
    expired = []
    for key in backend.store.keys.due("valid_to", now):
        # Only the material read as expired: an ImportKeyMaterial (a new ValidTo) or a state change
        # that committed since is left alone.
        still_due = {"state": key.state, "valid_to": key.valid_to}
        if key.state == "PendingDeletion":
            dropped = backend.store.keys.drop_imported_material(key.key_id, when=still_due, valid_to=None)
        else:
            dropped = backend.store.keys.drop_imported_material(
                key.key_id, when=still_due, state="PendingImport", valid_to=None
            )
        if dropped:
            expired.append(key.key_id)
    return expired


OPERATIONS = {
    "GetParametersForImport": get_parameters_for_import,
    "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": delete_imported_key_material,
}
