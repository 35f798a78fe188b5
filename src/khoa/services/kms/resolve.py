"""Turning the key identifiers callers send (key id, key ARN, alias name, alias ARN) into keys.

Also holds the state and usage checks every cryptographic operation makes, with AWS's errors.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.store import KeyRecord, key_arn

CROSS_ACCOUNT_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateMac",
        "VerifyMac",
        "Sign",
        "Verify",
        "GetPublicKey",
        "DescribeKey",
        "CreateGrant",
        "ListGrants",
        "RetireGrant",
        "RevokeGrant",
        "DeriveSharedSecret",
        "GetKeyRotationStatus",
    }
)


MANAGED_ALIASES = frozenset({"alias/aws/secretsmanager", "alias/aws/ssm"})


def alias_arn(ctx: RequestContext, alias_name: str) -> str:
    return f"arn:aws:kms:{ctx.region}:{ctx.account_id}:{alias_name}"


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


def alias_target(kms: KmsBackend, ctx: RequestContext, alias_name: str) -> str | None:
    """The key id ``alias_name`` points at in the caller's account and region (None: no such alias)."""
    return kms.store.aliases.target(ctx.account_id, ctx.region, alias_name)


def resolve_key(
    kms: KmsBackend,
    ctx: RequestContext,
    ref: str,
    *,
    allow_alias: bool = True,
    across_accounts: bool = False,
) -> KeyRecord:
    """Find the key ``ref`` names, or raise NotFoundException.

    A key ID or alias name means the caller's account and region. Another account's key is named by
    its key ARN (or alias ARN, where the operation takes aliases), and only in the operations AWS
    allows across accounts - or, with ``across_accounts``, for another service encrypting on the
    caller's behalf (Secrets Manager's and Parameter Store's KmsKeyId/KeyId take "the key ARN or
    the alias ARN" of a key in another account). Its key policy and the caller's IAM policies then
    decide, as for the caller's own keys."""
    key_id = ref
    owner = ctx.account_id
    if ref.startswith("arn:"):
        parts = ref.split(":", 5)
        if len(parts) != 6 or parts[2] != "kms":
            raise errors.invalid_key_id(ref)
        _, _, _, region, account, resource = parts
        elsewhere = account != ctx.account_id
        if elsewhere and not (across_accounts or ctx.operation in CROSS_ACCOUNT_OPERATIONS):
            if resource.startswith("alias/") and allow_alias:
                raise errors.not_found(f"Alias {ref} is not found.")
            if resource.startswith("key/") and _is_uuid(resource[4:]):
                raise errors.key_not_found(ref)
            raise errors.invalid_key_id(ref)
        if resource.startswith("alias/") and allow_alias:
            target = kms.store.aliases.target(account, region, resource) if region == ctx.region else None
            if target is None:
                raise errors.not_found(f"Alias {ref} is not found.")
            key_id = target
            owner = account
        elif resource.startswith("key/"):
            key_id = resource[4:]
            if not _is_uuid(key_id):
                raise errors.invalid_key_id(ref)
            if region != ctx.region:
                raise errors.key_not_found(ref)
            owner = account
        else:
            raise errors.invalid_key_id(ref)
    elif ref.startswith("alias/"):
        if not allow_alias:
            raise errors.invalid_key_id(ref)
        target = alias_target(kms, ctx, ref)
        if target is None and ref in MANAGED_ALIASES:
            from khoa.services.kms.internal import aws_managed_key  # created on first use, as in AWS

            return aws_managed_key(kms, ctx, ref.split("/")[2])
        if target is None:
            raise errors.not_found(f"Alias {alias_arn(ctx, ref)} is not found.")
        key_id = target
    elif not _is_uuid(ref):
        raise errors.invalid_key_id(ref)
    record = kms.store.keys.get(owner, ctx.region, key_id.lower())
    if record is None:
        raise errors.key_not_found(key_arn(ctx.region, owner, key_id))
    return record


def current_key(kms: KmsBackend, key: KeyRecord) -> KeyRecord:
    """``key`` as the database holds it now, for a handler whose conditional write found it changed
    since it was read (judged again on this); NotFoundException once it is gone."""
    now = kms.store.keys.fresh(key.key_id)
    if now is None:
        raise errors.key_not_found(key.arn)
    return now


def state_error(key: KeyRecord) -> AWSError | None:
    """The error AWS returns for using a key in a state that forbids cryptographic operations."""
    if key.state == "Enabled":
        return None
    if key.state == "Disabled":
        return errors.disabled(key.arn)
    if key.state == "PendingDeletion":
        return errors.invalid_state(f"{key.arn} is pending deletion.")
    if key.state == "PendingImport":
        return errors.invalid_state(f"{key.arn} is pending import.")
    return errors.invalid_state(f"{key.arn} is {key.state}.")


def require_usable(key: KeyRecord, usage: str, operation: str) -> None:
    problem = state_error(key)
    if problem is not None:
        raise problem
    if key.key_usage != usage:
        raise errors.invalid_key_usage(
            f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}."
        )


def require_not_pending_deletion(key: KeyRecord) -> None:
    if key.state == "PendingDeletion":
        raise errors.invalid_state(f"{key.arn} is pending deletion.")


def require_customer_managed(key: KeyRecord, operation: str) -> None:
    if key.key_manager == "AWS":
        raise errors.unsupported(f"{key.arn} is an AWS managed key: {operation} is not allowed on it.")


# Markers are offsets into a listing, so a marker names where the next page starts. Only markers Khoa
# issued are accepted: the operation that issued it and an offset in range (never beyond what SQLite
# and PostgreSQL integers hold), checked before any query; anything else is InvalidMarkerException.
MAX_MARKER_OFFSET = 2**31 - 1
_MARKER = re.compile(r"khoa:([A-Za-z]{1,64}):(0|[1-9][0-9]{0,9})")


def encode_marker(offset: int, operation: str) -> str:
    """The marker for the page of ``operation``'s listing that starts at ``offset``."""
    return base64.urlsafe_b64encode(f"khoa:{operation}:{offset}".encode()).decode()


def decode_marker(marker: str | None, operation: str) -> int:
    """The offset a marker from ``encode_marker(…, operation)`` names; InvalidMarkerException for a
    marker of another operation, of another shape, or out of range."""
    if not marker:
        return 0
    try:
        text = base64.urlsafe_b64decode(marker.encode("ascii")).decode("ascii")
    except (binascii.Error, ValueError, UnicodeError):
        raise errors.invalid_marker() from None
    match = _MARKER.fullmatch(text)
    if match is None or match.group(1) != operation:
        raise errors.invalid_marker()
    offset = int(match.group(2))
    if offset > MAX_MARKER_OFFSET:
        raise errors.invalid_marker()
    return offset
