"""Secret names and ARNs, and finding a secret from what a caller passes as SecretId."""

from __future__ import annotations

import re
import secrets
import string

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors
from khoa.services.secretsmanager.store import SecretRecord, SecretStore

_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]+$")
_SUFFIX_ALPHABET = string.ascii_letters + string.digits


def validate_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise errors.invalid_parameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, "
            "or any of the following: -/_+=.@!"
        )
    if name.startswith("arn:"):
        raise errors.invalid_parameter("Invalid name. A secret name can't start with arn:.")


def new_arn(ctx: RequestContext, name: str) -> str:
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    return f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:{name}-{suffix}"


def find(ctx: RequestContext, store: SecretStore, secret_id: str) -> SecretRecord | None:
    """By name, by full ARN, or by partial ARN (the ARN without its 6-character suffix)."""
    if secret_id.startswith("arn:"):
        record = store.by_arn(secret_id)
        if record is not None:
            return record if (record.account_id, record.region) == (ctx.account_id, ctx.region) else None
        prefix = f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:"
        if not secret_id.startswith(prefix):
            return None
        name = secret_id[len(prefix) :]
        record = store.by_name(ctx.account_id, ctx.region, name)
        if record is not None and record.arn[:-7] == secret_id:
            return record
        return None
    return store.by_name(ctx.account_id, ctx.region, secret_id)


def require(
    ctx: RequestContext, store: SecretStore, secret_id: str, *, allow_deleted: bool = False
) -> SecretRecord:
    record = find(ctx, store, secret_id)
    if record is None:
        raise errors.not_found()
    if record.deleted_at is not None and not allow_deleted:
        raise errors.marked_for_deletion()
    return record
