"""Envelope encryption of secret versions through Khoa's KMS.

Each version gets its own 256-bit data key from the secret's KMS key, with the encryption context
``{"SecretARN": arn, "SecretVersionId": version_id}``; the value is sealed with AES-256-GCM under
that data key, bound to the ARN, version and value kind. Reading a version asks KMS to decrypt the data
key, so the key's state (disabled, pending deletion, deleted) decides whether the value is readable.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import internal as kms_internal
from khoa.services.kms.store import KeyRecord
from khoa.services.secretsmanager import errors
from khoa.services.secretsmanager.store import SealedValue

SERVICE = "secretsmanager"
_NONCE = 12


def _context(arn: str, version_id: str) -> dict[str, str]:
    return {"SecretARN": arn, "SecretVersionId": version_id}


def _aad(arn: str, version_id: str, kind: str) -> bytes:
    return f"khoa-secret-v1|{arn}|{version_id}|{kind}".encode()


def encryption_key(ctx: RequestContext, kms_key_id: str | None) -> KeyRecord:
    try:
        return kms_internal.encryption_key(ctx, kms_key_id, SERVICE)
    except AWSError as exc:
        if exc.code == "NotFoundException":
            raise errors.not_found("Secrets Manager can't find the specified KMS key.") from None
        raise errors.encryption_failure() from None


def seal(
    ctx: RequestContext, key: KeyRecord, arn: str, version_id: str, kind: str, value: bytes
) -> SealedValue:
    try:
        data_key, encrypted_data_key = kms_internal.generate_data_key(
            kms_internal.via(ctx, SERVICE), key, _context(arn, version_id)
        )
    except AWSError as exc:
        if exc.code == "AccessDeniedException":
            raise
        raise errors.encryption_failure() from None
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(data_key).encrypt(nonce, value, _aad(arn, version_id, kind))
    return SealedValue(kind, key.arn, encrypted_data_key, sealed)


def open_value(
    ctx: RequestContext,
    arn: str,
    version_id: str,
    kind: str,
    encrypted_data_key: bytes,
    encrypted_value: bytes,
) -> bytes:
    try:
        _, data_key = kms_internal.decrypt(ctx, encrypted_data_key, _context(arn, version_id), SERVICE)
        return AESGCM(data_key).decrypt(
            encrypted_value[:_NONCE], encrypted_value[_NONCE:], _aad(arn, version_id, kind)
        )
    except AWSError as exc:
        if exc.code == "AccessDeniedException":
            raise
        raise errors.decryption_failure() from None
    except InvalidTag:
        raise errors.decryption_failure() from None
