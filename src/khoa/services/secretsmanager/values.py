"""Envelope encryption of secret versions through Khoa's KMS.

Each version gets its own 256-bit data key from the secret's KMS key, with the encryption context
``{"SecretARN": arn, "SecretVersionId": version_id}``; the value is sealed with AES-256-GCM under
that data key, bound to the ARN, version and value kind. Reading a version asks KMS to decrypt the data
key, so the key's state (disabled, pending deletion, deleted) decides whether the value is readable.

KMS is reached only through :class:`EnvelopeKeys`, the three calls Secrets Manager makes of it, so
Secrets Manager depends on what it uses of KMS and not on how the KMS service is put together.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from khoa.crypto.fingerprint import Fingerprinter
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import internal as kms_internal
from khoa.services.kms.internal import KeyRecord
from khoa.services.secretsmanager import errors
from khoa.services.secretsmanager.store import SealedValue

SERVICE = "secretsmanager"
_NONCE = 12


class EnvelopeKeys(Protocol):
    """KMS as another service uses it (khoa.services.kms.internal): the same key resolution, state,
    usage and policy checks as KMS's own API, with the calling service as ``kms:ViaService``."""

    def encryption_key(self, ctx: RequestContext, key_ref: str | None, service: str) -> KeyRecord:
        """The symmetric key to encrypt with: the one named, or the AWS-managed default."""
        ...

    def generate_data_key(
        self, ctx: RequestContext, key: KeyRecord, context: dict[str, str]
    ) -> tuple[bytes, bytes]:
        """A fresh data key and its ciphertext under ``key``."""
        ...

    def decrypt(
        self, ctx: RequestContext, blob: bytes, context: dict[str, str], service: str
    ) -> tuple[KeyRecord, bytes]:
        """The key that made ``blob`` and its plaintext."""
        ...


def _context(arn: str, version_id: str) -> dict[str, str]:
    return {"SecretARN": arn, "SecretVersionId": version_id}


def _aad(arn: str, version_id: str, kind: str) -> bytes:
    return f"khoa-secret-v1|{arn}|{version_id}|{kind}".encode()


def encryption_key(keys: EnvelopeKeys, ctx: RequestContext, kms_key_id: str | None) -> KeyRecord:
    try:
        return keys.encryption_key(ctx, kms_key_id, SERVICE)
    except AWSError as exc:
        if exc.code == "NotFoundException":
            raise errors.not_found("Secrets Manager can't find the specified KMS key.") from None
        raise errors.encryption_failure() from None


# The AWS-managed key's alias, as a KmsKeyId may name it.
MANAGED_ALIAS = "alias/aws/secretsmanager"


def managed_key_across_accounts() -> AWSError:
    """A caller of another account than the secret's writing a value under the secret's AWS-managed
    key: AWS's answer (UpdateSecret API reference: "You can only use the Amazon Web Services managed
    key aws/secretsmanager if you call this operation using credentials from the same Amazon Web
    Services account that owns the secret. If the secret is in a different account, then you must use a
    customer managed key")."""
    return errors.invalid_request(
        "You can't access a secret from a different AWS account if you encrypt the secret with the "
        "default KMS service key."
    )


def _in_account(kms_key_id: str, account_id: str, region: str) -> str:
    """A KmsKeyId as stored (key ID, key ARN, alias name or alias ARN) named by ARN in the secret's
    ``account_id`` and ``region``, so it resolves there and not in the caller's account."""
    if kms_key_id.startswith("arn:"):
        return kms_key_id
    if kms_key_id.startswith("alias/"):
        return f"arn:aws:kms:{region}:{account_id}:{kms_key_id}"
    return f"arn:aws:kms:{region}:{account_id}:key/{kms_key_id}"


def secret_key(
    keys: EnvelopeKeys, ctx: RequestContext, account_id: str, region: str, kms_key_id: str | None
) -> KeyRecord:
    """The key new values of a secret of ``account_id`` in ``region`` are sealed under: its KmsKeyId as
    stored (None: the AWS-managed ``aws/secretsmanager`` key), resolved in the secret's own account and
    region, never the caller's: an alias name or key ID written by the owner names the owner's key,
    and a caller of another account can't pick the key that seals the owner's values by making an
    alias of that name in its own account. The caller stays the principal KMS authorises.

    A caller of another account is refused the AWS-managed key (whose key policy trusts only its own
    account, and which AWS refuses across accounts), with AWS's InvalidRequestException, before
    anything is written."""
    owner_ctx = ctx if ctx.region == region else replace(ctx, region=region)
    if account_id == ctx.account_id:
        key = encryption_key(keys, owner_ctx, kms_key_id)
    else:
        if not kms_key_id or kms_key_id == MANAGED_ALIAS:
            raise managed_key_across_accounts()
        key = encryption_key(keys, owner_ctx, _in_account(kms_key_id, account_id, region))
    if key.key_manager == "AWS" and key.account_id != ctx.account_id:
        raise managed_key_across_accounts()
    return key


def seal(
    keys: EnvelopeKeys,
    ctx: RequestContext,
    key: KeyRecord,
    arn: str,
    version_id: str,
    kind: str,
    value: bytes,
    fingerprinter: Fingerprinter | None = None,
) -> SealedValue:
    """``value`` sealed for version ``version_id`` of the secret ``arn``; with ``fingerprinter``, its
    leak fingerprints go with it (stored in the version's transaction: khoa.storage.fingerprints)."""
    try:
        data_key, encrypted_data_key = keys.generate_data_key(
            kms_internal.via(ctx, SERVICE), key, _context(arn, version_id)
        )
    except AWSError as exc:
        if exc.code == "AccessDeniedException":
            raise
        raise errors.encryption_failure() from None
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(data_key).encrypt(nonce, value, _aad(arn, version_id, kind))
    if fingerprinter is None:
        return SealedValue(kind, key.arn, encrypted_data_key, sealed)
    if kind == "binary":
        items = fingerprinter.secret_binary_items(value)
    else:
        items = fingerprinter.secret_string_items(value.decode("utf-8", "surrogatepass"))
    return SealedValue(kind, key.arn, encrypted_data_key, sealed, tuple(items))


def open_value(
    keys: EnvelopeKeys,
    ctx: RequestContext,
    arn: str,
    version_id: str,
    kind: str,
    encrypted_data_key: bytes,
    encrypted_value: bytes,
) -> bytes:
    try:
        _, data_key = keys.decrypt(ctx, encrypted_data_key, _context(arn, version_id), SERVICE)
        return AESGCM(data_key).decrypt(
            encrypted_value[:_NONCE], encrypted_value[_NONCE:], _aad(arn, version_id, kind)
        )
    except AWSError as exc:
        if exc.code == "AccessDeniedException":
            raise
        raise errors.decryption_failure() from None
    except InvalidTag:
        raise errors.decryption_failure() from None
