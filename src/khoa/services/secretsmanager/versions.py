"""Secret versions and their staging labels: GetSecretValue, PutSecretValue, UpdateSecretVersionStage
and ListSecretVersionIds, and the version writes CreateSecret, UpdateSecret and rotations share."""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from datetime import datetime
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names, stages, values
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretRecord

_DAY_SECONDS = 86400.0

MAX_VALUE_BYTES = 65536


def value_from(params: dict[str, Any], *, required: bool) -> tuple[str, bytes] | None:
    """The (kind, bytes) of the SecretString or SecretBinary a request carries, checked as AWS does."""
    has_string = "SecretString" in params
    has_binary = "SecretBinary" in params
    if has_string and has_binary:
        raise errors.invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same secret."
        )
    if has_string:
        kind, value, member = "string", params["SecretString"].encode(), "secretString"
    elif has_binary:
        kind, value, member = "binary", params["SecretBinary"], "secretBinary"
    elif required:
        raise errors.invalid_request("You must provide either SecretString or SecretBinary.")
    else:
        return None
    if len(value) > MAX_VALUE_BYTES:
        raise errors.validation(
            f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_VALUE_BYTES}"
        )
    return kind, value


def request_token(params: dict[str, Any]) -> str:
    """The new version's id: the caller's ClientRequestToken, or a fresh UUID as the AWS SDKs send."""
    return params.get("ClientRequestToken") or str(uuid.uuid4())


def same_value(
    sm: SecretsBackend, ctx: RequestContext, record: SecretRecord, version_id: str, kind: str, value: bytes
) -> bool:
    """Whether ``version_id`` already holds exactly this value (a repeated, idempotent request)."""
    existing = sm.store.version(record.secret_id, version_id)
    if existing is None or existing.value_kind != kind:
        return False
    current = values.open_value(
        sm.keys,
        ctx,
        record.arn,
        version_id,
        existing.value_kind,
        existing.encrypted_data_key,
        existing.encrypted_value,
    )
    return hmac.compare_digest(current, value)


def add_version(
    sm: SecretsBackend,
    ctx: RequestContext,
    record: SecretRecord,
    version_id: str,
    kind: str,
    value: bytes,
    labels: list[str],
) -> list[str]:
    """Store a new encrypted version and attach labels; idempotent for a repeated token and value (the
    version's labels are returned, none moved), refused with AWS's ResourceExistsException naming the
    token for a repeated token with another value. The token of a rotation still without a value (see
    store.PLACEHOLDER) gets the value."""
    existing = sm.store.version(record.secret_id, version_id)
    if existing is not None and existing.placeholder:
        return _fill_placeholder(sm, ctx, record, version_id, kind, value, labels)
    if existing is not None:
        if same_value(sm, ctx, record, version_id, kind, value):
            return stages.by_version(sm.store.read_stages(record.secret_id)).get(version_id, [])
        raise errors.token_in_use(version_id, record.arn)
    key = values.secret_key(sm.keys, ctx, record.account_id, record.region, record.kms_key_id)
    sealed = values.seal(sm.keys, ctx, key, record.arn, version_id, kind, value, sm.fingerprinter)

    def relabel(before: dict[str, str]) -> dict[str, str]:
        # The first version of a secret always gets AWSCURRENT, whatever labels were asked for.
        first = [] if stages.CURRENT in before or stages.CURRENT in labels else [stages.CURRENT]
        return stages.attach(before, version_id, [*labels, *first])

    after = sm.store.add_version(record.secret_id, version_id, sealed, relabel, ctx.now.timestamp())
    if after is None:
        # the same ClientRequestToken, written concurrently by another request
        if same_value(sm, ctx, record, version_id, kind, value):
            return stages.by_version(sm.store.read_stages(record.secret_id)).get(version_id, [])
        raise errors.token_in_use(version_id, record.arn)
    return stages.by_version(after).get(version_id, [])


def _fill_placeholder(
    sm: SecretsBackend,
    ctx: RequestContext,
    record: SecretRecord,
    version_id: str,
    kind: str,
    value: bytes,
    labels: list[str],
) -> list[str]:
    key = values.secret_key(sm.keys, ctx, record.account_id, record.region, record.kms_key_id)
    sealed = values.seal(sm.keys, ctx, key, record.arn, version_id, kind, value, sm.fingerprinter)
    after = sm.store.fill_placeholder(
        record.secret_id,
        version_id,
        sealed,
        lambda before: stages.attach(before, version_id, labels),
        ctx.now.timestamp(),
    )
    return stages.by_version(after).get(version_id, [])


def _select_version(
    sm: SecretsBackend, record: SecretRecord, version_id: str | None, stage: str | None
) -> tuple[str, list[str]]:
    current = sm.store.read_stages(record.secret_id)
    labels = stages.by_version(current)
    if version_id is not None:
        if sm.store.version(record.secret_id, version_id) is None:
            raise errors.not_found(
                f"Secrets Manager can't find the specified secret value for VersionId: {version_id}"
            )
        if stage is not None and current.get(stage) != version_id:
            raise errors.invalid_request(
                "You provided a VersionStage that is not associated to the provided VersionId."
            )
        return version_id, labels.get(version_id, [])
    label = stage or stages.CURRENT
    chosen = current.get(label)
    if chosen is None:
        raise errors.not_found(
            f"Secrets Manager can't find the specified secret value for staging label: {label}"
        )
    return chosen, labels.get(chosen, [])


def _midnight(moment: datetime) -> float:
    """The start of ``moment``'s UTC day as a timestamp (the epoch's days are UTC days; ``moment`` is
    aware, as every request's clock is: building a datetime took longer, on every read)."""
    return moment.timestamp() // _DAY_SECONDS * _DAY_SECONDS


def read_value(
    sm: SecretsBackend, ctx: RequestContext, record: SecretRecord, version_id: str | None, stage: str | None
) -> dict[str, Any]:
    """GetSecretValue's answer for an already authorised read (BatchGetSecretValue and Parameter
    Store's ``/aws/reference/secretsmanager/`` use it too); notes the day of access, which AWS keeps."""
    chosen, labels = _select_version(sm, record, version_id, stage)
    version = sm.store.version(record.secret_id, chosen)
    if version is None:
        raise errors.not_found()
    if version.placeholder:  # a rotation's version before its createSecret step put a value
        raise errors.not_found(
            f"Secrets Manager can't find the specified secret value for VersionId: {chosen}"
            if version_id is not None
            else "Secrets Manager can't find the specified secret value for staging label: "
            + (stage or stages.CURRENT)
        )
    plaintext = values.open_value(
        sm.keys,
        ctx,
        record.arn,
        chosen,
        version.value_kind,
        version.encrypted_data_key,
        version.encrypted_value,
    )
    today = _midnight(ctx.now)
    if record.last_accessed_at != today or version.last_accessed_at != today:
        # Noted, not written: the store writes it off this read's path once the trail has recorded
        # this read (a read refused for want of a record changes nothing). See store/access.py.
        sm.store.access.note(
            (record.secret_id, chosen, today),
            region=ctx.region,
            account_id=ctx.account_id,
            request_id=ctx.request_id,
            at=ctx.now.timestamp(),
        )
    result: dict[str, Any] = {
        "ARN": record.arn,
        "Name": record.name,
        "VersionId": chosen,
        "VersionStages": labels,
        "CreatedDate": from_epoch(version.created_at),
    }
    if version.value_kind == "string":
        result["SecretString"] = plaintext.decode()
    else:
        result["SecretBinary"] = plaintext
    return result


def get_secret_value(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require_for_read(ctx, sm.store, params["SecretId"])
    return read_value(sm, ctx, record, params.get("VersionId"), params.get("VersionStage"))


def put_secret_value(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    kind, value = value_from(params, required=True) or ("", b"")
    version_id = request_token(params)
    labels = params.get("VersionStages") or [stages.CURRENT]
    attached = add_version(sm, ctx, record, version_id, kind, value, labels)
    return {"ARN": record.arn, "Name": record.name, "VersionId": version_id, "VersionStages": attached}


def update_secret_version_stage(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    move_to = params.get("MoveToVersionId")
    remove_from = params.get("RemoveFromVersionId")
    for version_id in (move_to, remove_from):
        if version_id is not None and sm.store.version(record.secret_id, version_id) is None:
            raise errors.invalid_parameter(f"The version {version_id} doesn't exist.")
    label = params["VersionStage"]
    sm.store.relabel(
        record.secret_id,
        lambda before: stages.move(before, label, remove_from, move_to),
        ctx.now.timestamp(),
    )
    return {"ARN": record.arn, "Name": record.name}


def list_secret_version_ids(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    labels = stages.by_version(sm.store.read_stages(record.secret_id))
    include_deprecated = params.get("IncludeDeprecated", False)
    versions = [
        v for v in sm.store.versions(record.secret_id) if include_deprecated or v.version_id in labels
    ]
    versions.sort(key=lambda v: v.created_at, reverse=True)
    limit = params.get("MaxResults", 100)
    offset = _decode_offset(params.get("NextToken"))
    page = versions[offset : offset + limit]
    entries = []
    for version in page:
        entry: dict[str, Any] = {
            "VersionId": version.version_id,
            "CreatedDate": from_epoch(version.created_at),
        }
        if not version.placeholder:
            entry["KmsKeyIds"] = [version.kms_key_arn]
        if version.version_id in labels:
            entry["VersionStages"] = labels[version.version_id]
        if version.last_accessed_at is not None:
            entry["LastAccessedDate"] = from_epoch(version.last_accessed_at)
        entries.append(entry)
    result: dict[str, Any] = {"Versions": entries, "ARN": record.arn, "Name": record.name}
    if offset + limit < len(versions):
        result["NextToken"] = _encode_offset(offset + limit)
    return result


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise errors.invalid_next_token() from None
    if prefix != "o" or offset < 0:
        raise errors.invalid_next_token()
    return offset


OPERATIONS = {
    "GetSecretValue": get_secret_value,
    "PutSecretValue": put_secret_value,
    "UpdateSecretVersionStage": update_secret_version_stage,
    "ListSecretVersionIds": list_secret_version_ids,
}
