"""The four XKS operations: validate the JSON body as the spec describes it, then ask the token.

The AAD handed to the token binds the caller's AAD and the ciphertext metadata with their lengths,
as the spec's Encrypt section recommends: ``len16(aad) || aad || len8(metadata) || metadata``. This
proxy returns no ciphertext metadata, but accepts it on Decrypt (it is then authenticated like AAD).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from khoa.xks_proxy.errors import XksError, invalid_ciphertext, validation
from khoa.xks_proxy.hsm import TAG_BYTES, Token

VENDOR = "Khoa"
MAX_AAD = 8192  # the spec's minimum to support; more is refused as unsupported
MAX_DATA = 65536  # plaintext/ciphertext bytes (the spec requires 4300)
MAX_METADATA = 20
MAX_METADATA_STRING = 2048


@dataclass(frozen=True)
class RequestMetadata:
    kms_request_id: str
    kms_operation: str
    aws_principal_arn: str
    kms_key_arn: str

    def log_fields(self) -> dict[str, str]:
        return {
            "kmsRequestId": self.kms_request_id,
            "kmsOperation": self.kms_operation,
            "awsPrincipalArn": self.aws_principal_arn,
            "kmsKeyArn": self.kms_key_arn,
        }


def request_metadata(body: dict[str, Any], required: tuple[str, ...]) -> RequestMetadata:
    """``requestMetadata``: the required fields present and strings; nothing else is validated
    (the spec: opaque values, unknown operations and extra fields accepted)."""
    meta = body.get("requestMetadata")
    if not isinstance(meta, dict):
        raise validation("requestMetadata is required and must be a JSON object.")
    for name in ("kmsRequestId", "kmsOperation", *required):
        value = meta.get(name)
        if not isinstance(value, str) or not value:
            raise validation(f"requestMetadata.{name} is required and must be a non-empty string.")
    for name, value in meta.items():
        if value is not None and not isinstance(value, str):
            raise validation(f"requestMetadata.{name} must be a string.")
        if isinstance(value, str) and len(value) > MAX_METADATA_STRING:
            raise validation(f"requestMetadata.{name} is longer than {MAX_METADATA_STRING} characters.")
    return RequestMetadata(
        kms_request_id=meta["kmsRequestId"],
        kms_operation=meta["kmsOperation"],
        aws_principal_arn=meta.get("awsPrincipalArn") or "",
        kms_key_arn=meta.get("kmsKeyArn") or "",
    )


def _b64(body: dict[str, Any], name: str, *, required: bool) -> bytes | None:
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"{name} is required.")
        return None
    if not isinstance(value, str):
        raise validation(f"{name} must be a Base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise validation(f"{name} is not valid standard Base64.") from None


def _algorithm(body: dict[str, Any]) -> None:
    algorithm = body.get("encryptionAlgorithm")
    if algorithm is None:
        raise validation("encryptionAlgorithm is required.")
    if algorithm != "AES_GCM":
        raise XksError("UnsupportedOperationException", "encryptionAlgorithm must be AES_GCM.")


def _aad(body: dict[str, Any]) -> bytes | None:
    aad = _b64(body, "additionalAuthenticatedData", required=False)
    if aad is not None and len(aad) > MAX_AAD:
        raise XksError(
            "UnsupportedOperationException", f"additionalAuthenticatedData is longer than {MAX_AAD} bytes."
        )
    return aad


def token_aad(aad: bytes | None, metadata: bytes | None) -> bytes:
    """The AAD given to the token: both parts with their lengths, so neither can pose as the other."""
    aad = aad or b""
    metadata = metadata or b""
    return len(aad).to_bytes(2, "big") + aad + len(metadata).to_bytes(1, "big") + metadata


def _b64s(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def health(token: Token) -> dict[str, Any]:
    state = token.health()
    return {
        "xksProxyFleetSize": 1,
        "xksProxyVendor": VENDOR,
        "xksProxyModel": f"Khoa XKS Proxy {_version()}",
        "ekmVendor": state.manufacturer,
        "ekmFleetDetails": [{"id": state.serial, "model": state.model, "healthStatus": state.status}],
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("khoa")
    except PackageNotFoundError:
        return "dev"


def key_metadata(token: Token, key_id: str) -> dict[str, Any]:
    info = token.key_info(key_id)
    return {
        "keySpec": info.key_spec,
        "keyUsage": info.usages[:10],
        "keyStatus": "ENABLED" if info.enabled else "DISABLED",
    }


def encrypt(token: Token, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    plaintext = _b64(body, "plaintext", required=True)
    assert plaintext is not None
    _algorithm(body)
    aad = _aad(body)
    cdiv_algorithm = body.get("ciphertextDataIntegrityValueAlgorithm")
    if cdiv_algorithm is not None and cdiv_algorithm != "SHA_256":
        raise XksError(
            "UnsupportedOperationException", "ciphertextDataIntegrityValueAlgorithm must be SHA_256."
        )
    if len(plaintext) > MAX_DATA:
        raise XksError("UnsupportedOperationException", f"plaintext is longer than {MAX_DATA} bytes.")
    iv, ciphertext, tag = token.encrypt(key_id, plaintext, token_aad(aad, None))
    out = {
        "ciphertext": _b64s(ciphertext),
        "initializationVector": _b64s(iv),
        "authenticationTag": _b64s(tag),
    }
    if cdiv_algorithm is not None:
        # Appendix C: compute the CDIV first, then prove the output decrypts before returning it.
        cdiv = hashlib.sha256((aad or b"") + iv + ciphertext + tag).digest()
        check = token.decrypt(key_id, iv, ciphertext, tag, token_aad(aad, None))
        if not hmac.compare_digest(check, plaintext):
            raise XksError("InternalException", "The encryption output did not decrypt; retry.")
        out["ciphertextDataIntegrityValue"] = _b64s(cdiv)
    return out


def decrypt(token: Token, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    ciphertext = _b64(body, "ciphertext", required=True)
    iv = _b64(body, "initializationVector", required=True)
    tag = _b64(body, "authenticationTag", required=True)
    assert ciphertext is not None and iv is not None and tag is not None
    _algorithm(body)
    aad = _aad(body)
    metadata = _b64(body, "ciphertextMetadata", required=False)
    if len(iv) not in (12, 16):
        raise invalid_ciphertext("initializationVector must be 12 or 16 bytes.")
    if len(tag) != TAG_BYTES:
        raise invalid_ciphertext("authenticationTag must be 16 bytes.")
    if metadata is not None and len(metadata) > MAX_METADATA:
        raise invalid_ciphertext("ciphertextMetadata is longer than 20 bytes.")
    if len(ciphertext) > MAX_DATA:
        raise XksError("UnsupportedOperationException", f"ciphertext is longer than {MAX_DATA} bytes.")
    plaintext = token.decrypt(key_id, iv, ciphertext, tag, token_aad(aad, metadata))
    return {"plaintext": _b64s(plaintext)}
