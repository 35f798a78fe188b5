"""Secret lifecycle and values: create, read, update, version labels, delete and restore."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms.store import KeyRecord
from khoa.services.secretsmanager import errors, names, replication, schedule, stages, values
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import (
    PLACEHOLDER,
    SECRETS,
    STAGES,
    VERSIONS,
    SecretRecord,
    SecretStore,
    insert_version,
)
from khoa.services.secretsmanager.tagging import validate_tags, write_tags

DEFAULT_RECOVERY_DAYS = 30
MAX_VALUE_BYTES = 65536
# Deprecated versions younger than this are kept even beyond 100 versions, as AWS keeps them.
PRUNE_MIN_AGE_SECONDS = 86400.0
# The labels whose versions UpdateSecret re-encrypts when the secret's KMS key changes.
_REENCRYPTED_LABELS = ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS")


def backend(ctx: RequestContext) -> SecretsBackend:
    return ctx.runtime.secrets


def store(ctx: RequestContext) -> SecretStore:
    return ctx.runtime.secrets.store


def _value_from(params: dict[str, Any], *, required: bool) -> tuple[str, bytes] | None:
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


def _token(params: dict[str, Any]) -> str:
    return params.get("ClientRequestToken") or str(uuid.uuid4())


def _same_value(ctx: RequestContext, record: SecretRecord, version_id: str, kind: str, value: bytes) -> bool:
    existing = store(ctx).version(record.secret_id, version_id)
    if existing is None or existing.value_kind != kind:
        return False
    current = values.open_value(
        ctx,
        record.arn,
        version_id,
        existing.value_kind,
        existing.encrypted_data_key,
        existing.encrypted_value,
    )
    return hmac.compare_digest(current, value)


def _prune_deprecated(conn: Connection, secret_id: str, now: float) -> None:
    """Keep at most 100 versions, as AWS does: the oldest versions without a label go first, but a
    version created less than 24 hours ago is never removed."""
    rows = conn.execute(
        select(VERSIONS.c.version_id, VERSIONS.c.created_at)
        .where(VERSIONS.c.secret_id == secret_id)
        .order_by(VERSIONS.c.created_at)
    ).all()
    excess = len(rows) - stages.MAX_VERSIONS
    if excess <= 0:
        return
    labelled = set(conn.execute(select(STAGES.c.version_id).where(STAGES.c.secret_id == secret_id)).scalars())
    removable = [v for v, created in rows if v not in labelled and created <= now - PRUNE_MIN_AGE_SECONDS]
    for version_id in removable[:excess]:
        conn.execute(
            delete(VERSIONS)
            .where(VERSIONS.c.secret_id == secret_id)
            .where(VERSIONS.c.version_id == version_id)
        )


def add_version(
    ctx: RequestContext, record: SecretRecord, version_id: str, kind: str, value: bytes, labels: list[str]
) -> list[str]:
    """Store a new encrypted version and attach labels; idempotent for a repeated token and value.
    The token of a rotation still without a value (see store.PLACEHOLDER) gets the value."""
    existing = store(ctx).version(record.secret_id, version_id)
    if existing is not None and existing.placeholder:
        return _fill_placeholder(ctx, record, version_id, kind, value, labels)
    if existing is not None:
        if _same_value(ctx, record, version_id, kind, value):
            return stages.by_version(store(ctx).read_stages(record.secret_id)).get(version_id, [])
        raise errors.exists("You can't modify an existing version, you can only create a new version.")
    key = values.encryption_key(ctx, record.kms_key_id)
    sealed = values.seal(ctx, key, record.arn, version_id, kind, value)
    now = ctx.now.timestamp()
    try:
        with backend(ctx).engine.begin() as conn:
            _lock(conn, record.secret_id, now)
            before = store(ctx).stages(conn, record.secret_id)
            # The first version of a secret always gets AWSCURRENT, whatever labels were asked for.
            first = [] if stages.CURRENT in before or stages.CURRENT in labels else [stages.CURRENT]
            after = stages.attach(before, version_id, [*labels, *first])
            insert_version(conn, record.secret_id, version_id, sealed, now)
            store(ctx).write_stages(conn, record.secret_id, before, after)
            _prune_deprecated(conn, record.secret_id, now)
    except IntegrityError:
        # the same ClientRequestToken, written concurrently by another request
        if _same_value(ctx, record, version_id, kind, value):
            return stages.by_version(store(ctx).read_stages(record.secret_id)).get(version_id, [])
        raise errors.exists(
            "You can't modify an existing version, you can only create a new version."
        ) from None
    return stages.by_version(after).get(version_id, [])


def _fill_placeholder(
    ctx: RequestContext, record: SecretRecord, version_id: str, kind: str, value: bytes, labels: list[str]
) -> list[str]:
    key = values.encryption_key(ctx, record.kms_key_id)
    sealed = values.seal(ctx, key, record.arn, version_id, kind, value)
    now = ctx.now.timestamp()
    with backend(ctx).engine.begin() as conn:
        _lock(conn, record.secret_id, now)
        filled = conn.execute(
            update(VERSIONS)
            .where(VERSIONS.c.secret_id == record.secret_id)
            .where(VERSIONS.c.version_id == version_id)
            .where(VERSIONS.c.value_kind == PLACEHOLDER)
            .values(
                created_at=now,
                value_kind=sealed.kind,
                kms_key_arn=sealed.kms_key_arn,
                encrypted_data_key=sealed.encrypted_data_key,
                encrypted_value=sealed.encrypted_value,
            )
        )
        if filled.rowcount != 1:  # another request put a value first
            raise errors.exists("You can't modify an existing version, you can only create a new version.")
        before = store(ctx).stages(conn, record.secret_id)
        after = stages.attach(before, version_id, labels)
        store(ctx).write_stages(conn, record.secret_id, before, after)
    store(ctx).invalidate_all()
    return stages.by_version(after).get(version_id, [])


def _lock(conn: Connection, secret_id: str, now: float) -> None:
    """Start a write to a secret's versions or labels by updating its row: concurrent writers to the same
    secret wait here (a row lock on PostgreSQL, the write lock on SQLite), so labels read next are current."""
    conn.execute(update(SECRETS).where(SECRETS.c.secret_id == secret_id).values(last_changed_at=now))


def create_secret(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["Name"]
    names.validate_name(name)
    value = _value_from(params, required=False)
    tags = params.get("Tags", [])
    validate_tags(tags)
    if params.get("CrossAccountPrimaryARN"):
        raise errors.invalid_request("Cross-account replication is not supported by Khoa.")
    replica_specs = params.get("AddReplicaRegions") or []
    replication.validate_regions(ctx, replica_specs)
    version_id = _token(params)
    existing = store(ctx).by_name(ctx.account_id, ctx.region, name)
    if existing is not None:
        if existing.deleted_at is not None:
            raise errors.invalid_request(
                "You can't create this secret because a secret with this name is "
                "already scheduled for deletion."
            )
        if (
            value is not None
            and params.get("ClientRequestToken")
            and _same_value(ctx, existing, version_id, *value)
        ):
            return {"ARN": existing.arn, "Name": existing.name, "VersionId": version_id}
        raise errors.exists(f"The operation failed because the secret {name} already exists.")
    kms_ref = params.get("KmsKeyId") or None
    key = values.encryption_key(ctx, kms_ref)
    now = ctx.now.timestamp()
    record = SecretRecord(
        secret_id=str(uuid.uuid4()),
        account_id=ctx.account_id,
        region=ctx.region,
        name=name,
        arn=names.new_arn(ctx, name),
        description=params.get("Description"),
        kms_key_id=kms_ref,  # as the caller named it (key ID, key ARN, alias name or alias ARN)
        created_at=now,
        last_changed_at=now,
        last_accessed_at=None,
        deleted_at=None,
        deletion_due_at=None,
        rotation_enabled=False,
        rotation_lambda_arn=None,
        rotation_rules=None,
        last_rotated_at=None,
        next_rotation_at=None,
        resource_policy=None,
        primary_region=None,
        primary_secret_id=None,
        owning_service=None,
        secret_type=params.get("Type"),
    )
    sealed = values.seal(ctx, key, record.arn, version_id, *value) if value is not None else None
    try:
        with backend(ctx).engine.begin() as conn:
            conn.execute(insert(SECRETS).values(**record.values()))
            if sealed is not None:
                insert_version(conn, record.secret_id, version_id, sealed, now)
                conn.execute(
                    insert(STAGES).values(
                        secret_id=record.secret_id, stage=stages.CURRENT, version_id=version_id
                    )
                )
            write_tags(conn, record.secret_id, tags)
    except IntegrityError:
        raise errors.exists(f"The operation failed because the secret {name} already exists.") from None
    result: dict[str, Any] = {"ARN": record.arn, "Name": name}
    if sealed is not None:
        result["VersionId"] = version_id
    if replica_specs:
        result["ReplicationStatus"] = replication.add_replicas(
            ctx, record, replica_specs, force=params.get("ForceOverwriteReplicaSecret", False)
        )
    return result


def _select_version(
    ctx: RequestContext, record: SecretRecord, version_id: str | None, stage: str | None
) -> tuple[str, list[str]]:
    current = store(ctx).read_stages(record.secret_id)
    labels = stages.by_version(current)
    if version_id is not None:
        if store(ctx).version(record.secret_id, version_id) is None:
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
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()


def read_value(
    ctx: RequestContext, record: SecretRecord, version_id: str | None, stage: str | None
) -> dict[str, Any]:
    chosen, labels = _select_version(ctx, record, version_id, stage)
    version = store(ctx).version(record.secret_id, chosen)
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
        ctx, record.arn, chosen, version.value_kind, version.encrypted_data_key, version.encrypted_value
    )
    today = _midnight(ctx.now)
    if record.last_accessed_at != today or version.last_accessed_at != today:
        with backend(ctx).engine.begin() as conn:
            conn.execute(
                update(SECRETS).where(SECRETS.c.secret_id == record.secret_id).values(last_accessed_at=today)
            )
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.secret_id == record.secret_id)
                .where(VERSIONS.c.version_id == chosen)
                .values(last_accessed_at=today)
            )
        store(ctx).invalidate_all()
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


def get_secret_value(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"])
    return read_value(ctx, record, params.get("VersionId"), params.get("VersionStage"))


def put_secret_value(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"])
    kind, value = _value_from(params, required=True) or ("", b"")
    version_id = _token(params)
    labels = params.get("VersionStages") or [stages.CURRENT]
    attached = add_version(ctx, record, version_id, kind, value, labels)
    return {"ARN": record.arn, "Name": record.name, "VersionId": version_id, "VersionStages": attached}


def update_secret(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"])
    value = _value_from(params, required=False)
    version_id = _token(params)
    if value is not None and store(ctx).version(record.secret_id, version_id) is not None:
        # Unlike CreateSecret and PutSecretValue, UpdateSecret is not idempotent on the token: "If you
        # call this operation with a ClientRequestToken that matches an existing version's VersionId,
        # the operation results in an error."
        raise errors.exists("You can't modify an existing version, you can only create a new version.")
    column_values: dict[str, Any] = {}
    if "Description" in params:
        column_values["description"] = params["Description"]
    if "Type" in params:
        column_values["secret_type"] = params["Type"]
    key = None
    if "KmsKeyId" in params:
        # An empty KmsKeyId means the AWS-managed aws/secretsmanager key.
        kms_ref = params["KmsKeyId"] or None
        key = values.encryption_key(ctx, kms_ref)
        if kms_ref != record.kms_key_id:
            column_values["kms_key_id"] = kms_ref
    if column_values:
        column_values["last_changed_at"] = ctx.now.timestamp()
    # Everything that can fail runs before anything is written, so a refused call changes nothing:
    # the labelled versions a key change re-encrypts must open (their key may be disabled) and the new
    # value must seal under the (new) key before the description, type or key change is stored.
    changed = replace(record, **column_values)
    opened = _open_labelled(ctx, record, key) if key is not None else {}
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if value is not None:
        add_version(ctx, changed, version_id, value[0], value[1], [stages.CURRENT])
        result["VersionId"] = version_id
    if column_values:
        store(ctx).update(record.secret_id, **column_values)
    if key is not None:
        _reencrypt_labelled(ctx, changed, key, opened)
    return result


def _open_labelled(ctx: RequestContext, record: SecretRecord, key: KeyRecord) -> dict[str, tuple[str, bytes]]:
    """The AWSCURRENT, AWSPENDING and AWSPREVIOUS versions not yet under ``key``, opened: version id →
    (value kind, plaintext). Raises (a disabled key, say) before the caller has written anything."""
    labelled = store(ctx).read_stages(record.secret_id)
    opened: dict[str, tuple[str, bytes]] = {}
    for version_id in sorted({labelled[label] for label in _REENCRYPTED_LABELS if label in labelled}):
        version = store(ctx).version(record.secret_id, version_id)
        if version is None or version.placeholder or version.kms_key_arn == key.arn:
            continue
        plaintext = values.open_value(
            ctx,
            record.arn,
            version_id,
            version.value_kind,
            version.encrypted_data_key,
            version.encrypted_value,
        )
        opened[version_id] = (version.value_kind, plaintext)
    return opened


def _reencrypt_labelled(
    ctx: RequestContext, record: SecretRecord, key: KeyRecord, opened: dict[str, tuple[str, bytes]]
) -> None:
    """After a key change, re-encrypt the versions that still carry AWSCURRENT, AWSPENDING or
    AWSPREVIOUS under the new key, as AWS does; other versions stay under the key that encrypted them.
    ``opened`` holds their plaintexts, read before the change was written (_open_labelled)."""
    labelled = store(ctx).read_stages(record.secret_id)
    for version_id in {labelled[label] for label in _REENCRYPTED_LABELS if label in labelled}:
        if version_id not in opened:
            continue  # already under the key (a new version is sealed under it when added)
        kind, plaintext = opened[version_id]
        sealed = values.seal(ctx, key, record.arn, version_id, kind, plaintext)
        with backend(ctx).engine.begin() as conn:
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.secret_id == record.secret_id)
                .where(VERSIONS.c.version_id == version_id)
                .values(
                    kms_key_arn=sealed.kms_key_arn,
                    encrypted_data_key=sealed.encrypted_data_key,
                    encrypted_value=sealed.encrypted_value,
                )
            )


def update_secret_version_stage(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"])
    move_to = params.get("MoveToVersionId")
    remove_from = params.get("RemoveFromVersionId")
    for version_id in (move_to, remove_from):
        if version_id is not None and store(ctx).version(record.secret_id, version_id) is None:
            raise errors.invalid_parameter(f"The version {version_id} doesn't exist.")
    with backend(ctx).engine.begin() as conn:
        _lock(conn, record.secret_id, ctx.now.timestamp())
        before = store(ctx).stages(conn, record.secret_id)
        after = stages.move(before, params["VersionStage"], remove_from, move_to)
        store(ctx).write_stages(conn, record.secret_id, before, after)
        _prune_deprecated(conn, record.secret_id, ctx.now.timestamp())
    return {"ARN": record.arn, "Name": record.name}


def describe(
    ctx: RequestContext,
    record: SecretRecord,
    *,
    list_entry: bool = False,
    tags: list[dict[str, str]] | None = None,
    labels: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if record.description is not None:
        result["Description"] = record.description
    if record.kms_key_id:
        result["KmsKeyId"] = record.kms_key_id
    # A secret never configured for rotation has no RotationEnabled ("returns null"); fields without a
    # value are left out, as AWS leaves them out.
    if record.rotation_enabled or record.rotation_lambda_arn or record.rotation_rules:
        result["RotationEnabled"] = record.rotation_enabled
    if record.rotation_lambda_arn:
        result["RotationLambdaARN"] = record.rotation_lambda_arn
    if record.rules:
        result["RotationRules"] = record.rules
    for field, column in (
        ("LastRotatedDate", record.last_rotated_at),
        ("LastChangedDate", record.last_changed_at),
        ("LastAccessedDate", record.last_accessed_at),
        ("DeletedDate", record.deleted_at),
    ):
        if column is not None:
            result[field] = from_epoch(column)
    if record.rotation_enabled and record.next_rotation_at is not None:
        result["NextRotationDate"] = _rotation_date(record)
    tag_list = tags if tags is not None else store(ctx).tags(record.secret_id)
    if tag_list:
        result["Tags"] = tag_list
    stage_map = labels if labels is not None else stages.by_version(store(ctx).read_stages(record.secret_id))
    if stage_map:
        result["SecretVersionsToStages" if list_entry else "VersionIdsToStages"] = stage_map
    if record.owning_service:
        result["OwningService"] = record.owning_service
    if record.secret_type:
        result["Type"] = record.secret_type
    result["CreatedDate"] = from_epoch(record.created_at)
    result["PrimaryRegion"] = record.primary_region or record.region
    return result


def _rotation_date(record: SecretRecord) -> datetime | None:
    """The last second of the rotation window that opens at the stored next_rotation_at."""
    opens = from_epoch(record.next_rotation_at)
    if opens is None or not record.rules:
        return opens
    try:
        return schedule.rotation_date(record.rules, opens)
    except AWSError:  # rules stored before a validation rule existed: report when the window opens
        return opens


def describe_secret(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"], allow_deleted=True)
    result = describe(ctx, record)
    replicas = ctx.runtime.secrets_replication.status(ctx, record)
    if replicas:
        result["ReplicationStatus"] = replicas
    return result


def delete_secret(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    force = params.get("ForceDeleteWithoutRecovery", False)
    window = params.get("RecoveryWindowInDays")
    if force and window is not None:
        raise errors.invalid_parameter(
            "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
        )
    if window is not None and not 7 <= window <= 30:
        raise errors.invalid_parameter(
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
        )
    record = names.find(ctx, store(ctx), params["SecretId"])
    if record is None:
        if not force:
            raise errors.not_found()
        # "If you forcibly delete an already deleted or nonexistent secret, the operation does not
        # return ResourceNotFoundException."
        name = names.name_from_id(params["SecretId"])
        arn = params["SecretId"] if params["SecretId"].startswith("arn:") else names.new_arn(ctx, name)
        return {"ARN": arn, "Name": name, "DeletionDate": ctx.now}
    if record.primary_secret_id is not None:
        raise errors.replica_not_permitted()
    replicas = ctx.runtime.secrets_replication.replicas(ctx, record)
    if replicas:
        regions = ", ".join(r.region for r in replicas)
        raise errors.invalid_parameter(
            f"You can't delete secret {record.arn} that still has replica regions [{regions}]."
        )
    if record.deleted_at is not None and not force:
        raise errors.invalid_request(
            "You can't perform this operation on the secret because it was already scheduled for deletion."
        )
    now = ctx.now
    if force:
        store(ctx).destroy(record.secret_id)
        return {"ARN": record.arn, "Name": record.name, "DeletionDate": now}
    due = now + timedelta(days=window or DEFAULT_RECOVERY_DAYS)
    store(ctx).update(record.secret_id, deleted_at=now.timestamp(), deletion_due_at=due.timestamp())
    return {"ARN": record.arn, "Name": record.name, "DeletionDate": due}


def restore_secret(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"], allow_deleted=True)
    store(ctx).update(
        record.secret_id, deleted_at=None, deletion_due_at=None, last_changed_at=ctx.now.timestamp()
    )
    return {"ARN": record.arn, "Name": record.name}


def list_secret_version_ids(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, store(ctx), params["SecretId"], allow_deleted=True)
    labels = stages.by_version(store(ctx).read_stages(record.secret_id))
    include_deprecated = params.get("IncludeDeprecated", False)
    versions = [
        v for v in store(ctx).versions(record.secret_id) if include_deprecated or v.version_id in labels
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
    import base64

    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_offset(token: str | None) -> int:
    import base64
    import binascii

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


def destroy_due_secrets(sm: SecretsBackend, now: float) -> list[str]:
    """The job that ends recovery windows: the secret and every version are gone for good."""
    with sm.engine.connect() as conn:
        due = conn.execute(
            select(SECRETS.c.secret_id, SECRETS.c.arn)
            .where(SECRETS.c.deletion_due_at.is_not(None))
            .where(SECRETS.c.deletion_due_at <= now)
        ).all()
    for secret_id, _arn in due:
        sm.store.destroy(secret_id)
    return [arn for _, arn in due]


OPERATIONS = {
    "CreateSecret": create_secret,
    "GetSecretValue": get_secret_value,
    "PutSecretValue": put_secret_value,
    "UpdateSecret": update_secret,
    "UpdateSecretVersionStage": update_secret_version_stage,
    "DescribeSecret": describe_secret,
    "DeleteSecret": delete_secret,
    "RestoreSecret": restore_secret,
    "ListSecretVersionIds": list_secret_version_ids,
}
