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
# ctx.extras: (SecretId, the secret) the request's authorisation found (see note_found)
_FOUND = "secretsmanager:found"


_INVALID_NAME = (
    "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!"
)


def validate_name(name: str) -> None:
    """AWS answers a name (or a SecretId that is not an ARN) outside ``[A-Za-z0-9/_+=.@-]`` with a
    ValidationException."""
    if not _NAME_RE.match(name):
        raise errors.validation(_INVALID_NAME)


def new_arn(ctx: RequestContext, name: str) -> str:
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    return f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:{name}-{suffix}"


def find(ctx: RequestContext, store: SecretStore, secret_id: str) -> SecretRecord | None:
    """By name, by full ARN, or by partial ARN (the ARN without its 6-character suffix). A SecretId that
    is neither an ARN nor a valid name is refused with AWS's ValidationException; an empty one (which
    request validation never lets through) names nothing."""
    if not secret_id:
        return None
    if not secret_id.startswith("arn:"):
        validate_name(secret_id)
        return store.by_name(ctx.account_id, ctx.region, secret_id)
    record = store.by_arn(secret_id)
    if record is not None:
        # Another account's secret is reachable by its full ARN (same region); its resource policy
        # and the caller's own policies decide, as for cross-account access in AWS.
        return record if record.region == ctx.region else None
    prefix = f"arn:aws:secretsmanager:{ctx.region}:{ctx.account_id}:secret:"
    if not secret_id.startswith(prefix):
        return None
    record = store.by_name(ctx.account_id, ctx.region, secret_id[len(prefix) :])
    if record is not None and record.arn[:-7] == secret_id:
        return record
    return None


def name_from_id(secret_id: str) -> str:
    """The secret name a SecretId stands for when no such secret exists (ARN suffix removed)."""
    if not secret_id.startswith("arn:"):
        return secret_id
    name = secret_id.split(":secret:", 1)[-1]
    return re.sub(r"-[A-Za-z0-9]{6}$", "", name)


def require(
    ctx: RequestContext, store: SecretStore, secret_id: str, *, allow_deleted: bool = False
) -> SecretRecord:
    return _present(find(ctx, store, secret_id), allow_deleted)


def _present(record: SecretRecord | None, allow_deleted: bool = False) -> SecretRecord:
    if record is None:
        raise errors.not_found()
    if record.deleted_at is not None and not allow_deleted:
        raise errors.marked_for_deletion()
    return record


def note_found(ctx: RequestContext, secret_id: str, record: SecretRecord) -> None:
    """Remember, for this request's handler, the secret its authorisation found by ``secret_id``."""
    ctx.extras[_FOUND] = (secret_id, record)


def require_for_read(ctx: RequestContext, store: SecretStore, secret_id: str) -> SecretRecord:
    """:func:`require` for a read-only handler: the secret its authorisation found (:func:`note_found`)
    by the same SecretId moments before, in the same call with nothing written between, else found
    now. A write finds its secret afresh when its handler runs (later, on another thread)."""
    noted = ctx.extras.get(_FOUND)
    if noted is not None and noted[0] == secret_id:
        return _present(noted[1])
    return require(ctx, store, secret_id)
