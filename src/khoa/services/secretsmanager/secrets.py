"""A secret's life: CreateSecret, DescribeSecret, UpdateSecret, DeleteSecret and RestoreSecret, and the
job that ends recovery windows. Version values and labels are versions.py's."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms.internal import KeyRecord
from khoa.services.secretsmanager import (
    authz,
    errors,
    names,
    replication,
    schedule,
    stages,
    values,
    versions,
)
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SealedValue, SecretRecord
from khoa.services.secretsmanager.tags import validate_tags

DEFAULT_RECOVERY_DAYS = 30
# The labels whose versions UpdateSecret re-encrypts when the secret's KMS key changes.
_REENCRYPTED_LABELS = ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS")


def create_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["Name"]
    names.validate_name(name)
    value = versions.value_from(params, required=False)
    tags = params.get("Tags", [])
    validate_tags(tags)
    if params.get("CrossAccountPrimaryARN"):
        raise errors.invalid_request("Cross-account replication is not supported by Khoa.")
    replica_specs = params.get("AddReplicaRegions") or []
    replication.validate_regions(sm, ctx, replica_specs)
    version_id = versions.request_token(params)
    existing = sm.store.by_name(ctx.account_id, ctx.region, name)
    if existing is not None:
        return _created_before(sm, ctx, existing, params, value, version_id)
    # A secret ForceOverwriteReplicaSecret would replace is checked before the new one is stored.
    force = params.get("ForceOverwriteReplicaSecret", False)
    replication.check_overwrites(sm, ctx, ctx.account_id, name, replica_specs, force=force)
    kms_ref = params.get("KmsKeyId") or None
    key = values.encryption_key(sm.keys, ctx, kms_ref)
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
    sealed = (
        values.seal(sm.keys, ctx, key, record.arn, version_id, *value, sm.fingerprinter)
        if value is not None
        else None
    )
    try:
        if sealed is not None:
            sm.store.create(record, tags, (version_id, sealed), {stages.CURRENT: version_id})
        else:
            sm.store.create(record, tags, None, {})
    except AWSError as refused:
        # A concurrent CreateSecret stored the name first: perhaps this very request, retried by its
        # SDK while the first try was still running. Judge it as a repeat, from the stored secret.
        racing = sm.store.by_name(ctx.account_id, ctx.region, name)
        if refused.code != "ResourceExistsException" or racing is None:
            raise
        return _created_before(sm, ctx, racing, params, value, version_id)
    result: dict[str, Any] = {"ARN": record.arn, "Name": name}
    if sealed is not None:
        result["VersionId"] = version_id
    if replica_specs:
        result["ReplicationStatus"] = replication.add_replicas(sm, ctx, record, replica_specs, force=force)
    return result


def _created_before(
    sm: SecretsBackend,
    ctx: RequestContext,
    existing: SecretRecord,
    params: dict[str, Any],
    value: tuple[str, bytes] | None,
    version_id: str,
) -> dict[str, Any]:
    """CreateSecret of a name that exists: the same request again (its token a version of the secret,
    with the same value) succeeds as before; anything else is refused.

    CreateSecret is authorised on the new secret's ARN only (authz._authorize_create), and telling
    "same value" from "another value" tells whether a guess is the stored value. So the value is
    compared only for a caller who may already learn it, or test it, on the existing secret itself:
    secretsmanager:GetSecretValue on that version, or secretsmanager:PutSecretValue (whose
    ClientRequestToken AWS documents as the same comparison). Any other caller gets
    ResourceExistsException whatever it sent, and nothing is decrypted for it."""
    if existing.deleted_at is not None:
        raise errors.invalid_request(
            "You can't create this secret because a secret with this name is already scheduled for deletion."
        )
    if (
        value is not None
        and params.get("ClientRequestToken")
        and sm.store.version(existing.secret_id, version_id) is not None
        and _may_compare(sm, ctx, existing, version_id)
    ):
        # With another value AWS names the token (moto's AWS-verified
        # test_create_different_secret_with_same_token).
        if versions.same_value(sm, ctx, existing, version_id, *value):
            return {"ARN": existing.arn, "Name": existing.name, "VersionId": version_id}
        raise errors.token_in_use(version_id, existing.arn)
    raise errors.secret_exists(existing.name)


def _may_compare(sm: SecretsBackend, ctx: RequestContext, existing: SecretRecord, version_id: str) -> bool:
    """Whether the caller may read version ``version_id`` of ``existing``, or write a version of it
    (each judged as that request on that secret would be, its resource policy and tags included)."""
    reading = {"SecretId": existing.arn, "VersionId": version_id}
    writing = {"SecretId": existing.arn, "ClientRequestToken": version_id}
    return authz.secret_allows(sm, ctx, "secretsmanager:GetSecretValue", existing, reading) or (
        authz.secret_allows(sm, ctx, "secretsmanager:PutSecretValue", existing, writing)
    )


def update_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    value = versions.value_from(params, required=False)
    # The API reference says UpdateSecret with a ClientRequestToken that matches an existing version's
    # VersionId "results in an error". AWS answers otherwise (moto's AWS-verified
    # test_update_same_secret_value_with_same_token and test_update_different_secret_value_with_same_token):
    # the same value under the same token is the same request again and succeeds with that VersionId;
    # only another value is refused, with the message naming the token. Khoa follows AWS's answers,
    # which are what a retrying SDK meets; add_version decides both cases.
    version_id = versions.request_token(params)
    column_values: dict[str, Any] = {}
    if "Description" in params:
        column_values["description"] = params["Description"]
    if "Type" in params:
        column_values["secret_type"] = params["Type"]
    key = None
    if "KmsKeyId" in params:
        # An empty KmsKeyId means the AWS-managed aws/secretsmanager key.
        kms_ref = params["KmsKeyId"] or None
        # Resolved in the secret's account and region (a caller of another account may not use the
        # AWS-managed key: values.secret_key).
        key = values.secret_key(sm.keys, ctx, record.account_id, record.region, kms_ref)
        if kms_ref != record.kms_key_id:
            column_values["kms_key_id"] = kms_ref
    if column_values:
        column_values["last_changed_at"] = ctx.now.timestamp()
    # Everything that can fail runs before anything is written, so a refused call changes nothing:
    # the labelled versions a key change re-encrypts must open (their key may be disabled) and seal
    # under the new key, and the new value must seal under the (new) key, before the description, type
    # or key change is stored.
    changed = replace(record, **column_values)
    resealed = _reseal_labelled(sm, ctx, record, key) if key is not None else {}
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if value is not None:
        versions.add_version(sm, ctx, changed, version_id, value[0], value[1], [stages.CURRENT])
        result["VersionId"] = version_id
    if column_values:
        sm.store.update(record.secret_id, **column_values)
    if resealed:
        # Only the versions that still carry a label once the new value (if any) moved them.
        labelled = sm.store.read_stages(record.secret_id)
        for version_id in {labelled[label] for label in _REENCRYPTED_LABELS if label in labelled}:
            if version_id in resealed:
                sm.store.reseal(record.secret_id, version_id, resealed[version_id])
    return result


def _reseal_labelled(
    sm: SecretsBackend, ctx: RequestContext, record: SecretRecord, key: KeyRecord
) -> dict[str, SealedValue]:
    """The AWSCURRENT, AWSPENDING and AWSPREVIOUS versions not yet under ``key``, opened and sealed
    under it: version id → its new sealed value. Raises (their key disabled, say) before the caller
    has written anything. None are resealed when the caller may not encrypt under ``key``: AWS then
    changes the secret's key for new versions and leaves the existing ones under theirs ("if you
    don't have kms:Encrypt permission to the new key, Secrets Manager does not re-encrypt existing
    secret versions")."""
    labelled = sm.store.read_stages(record.secret_id)
    opened: dict[str, tuple[str, bytes]] = {}
    for version_id in sorted({labelled[label] for label in _REENCRYPTED_LABELS if label in labelled}):
        version = sm.store.version(record.secret_id, version_id)
        if version is None or version.placeholder or version.kms_key_arn == key.arn:
            continue
        plaintext = values.open_value(
            sm.keys,
            ctx,
            record.arn,
            version_id,
            version.value_kind,
            version.encrypted_data_key,
            version.encrypted_value,
        )
        opened[version_id] = (version.value_kind, plaintext)
    resealed: dict[str, SealedValue] = {}
    for version_id, (kind, plaintext) in opened.items():
        try:
            resealed[version_id] = values.seal(sm.keys, ctx, key, record.arn, version_id, kind, plaintext)
        except AWSError as exc:
            if exc.code != "AccessDeniedException":
                raise
            return {}
    return resealed


def describe(
    record: SecretRecord,
    *,
    tags: list[dict[str, str]] | None,
    labels: dict[str, list[str]],
    replicated: bool,
    list_entry: bool = False,
) -> dict[str, Any]:
    """DescribeSecret's fields for ``record`` (a ListSecrets entry with ``list_entry``), given its
    ``tags`` (None: never tagged), its labels by version, and whether it is known to have replicas.
    ListSecrets reads the tags and labels of a whole page in one query each."""
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
    # A secret that had tags and lost them all has an empty list; one never tagged has none (AWS's
    # recorded answers, LocalStack's test_secret_tags).
    if tags is not None:
        result["Tags"] = tags
    if labels:
        result["SecretVersionsToStages" if list_entry else "VersionIdsToStages"] = labels
    if record.owning_service:
        result["OwningService"] = record.owning_service
    if record.secret_type:
        result["Type"] = record.secret_type
    result["CreatedDate"] = from_epoch(record.created_at)
    primary_region = primary_region_of(record, replicated=replicated)
    if primary_region is not None:
        result["PrimaryRegion"] = primary_region
    return result


def primary_region_of(record: SecretRecord, *, replicated: bool) -> str | None:
    """PrimaryRegion, which AWS returns only for a secret that is replicated: a replica names its
    primary's Region, a primary its own (its primary_region is set while it has replicas:
    replication.py). ``replicated`` says the caller found replicas of ``record``."""
    if record.primary_region is not None:
        return record.primary_region
    return record.region if replicated else None


def _rotation_date(record: SecretRecord) -> datetime | None:
    """The last second of the rotation window that opens at the stored next_rotation_at."""
    opens = from_epoch(record.next_rotation_at)
    if opens is None or not record.rules:
        return opens
    try:
        return schedule.rotation_date(record.rules, opens)
    except AWSError:  # rules stored before a validation rule existed: report when the window opens
        return opens


def describe_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    replicas = replication.status(sm, record)
    result = describe(
        record,
        tags=sm.store.tags(record.secret_id),
        labels=stages.by_version(sm.store.read_stages(record.secret_id)),
        replicated=bool(replicas),
    )
    if replicas:
        result["ReplicationStatus"] = replicas
    return result


def delete_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
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
    record = names.find(ctx, sm.store, params["SecretId"])
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
    replicas = sm.store.replicas_of(record.secret_id)
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
        sm.store.destroy(record.secret_id)
        return {"ARN": record.arn, "Name": record.name, "DeletionDate": now}
    due = now + timedelta(days=window or DEFAULT_RECOVERY_DAYS)
    sm.store.update(record.secret_id, deleted_at=now.timestamp(), deletion_due_at=due.timestamp())
    return {"ARN": record.arn, "Name": record.name, "DeletionDate": due}


def restore_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    sm.store.update(
        record.secret_id, deleted_at=None, deletion_due_at=None, last_changed_at=ctx.now.timestamp()
    )
    return {"ARN": record.arn, "Name": record.name}


def destroy_due_secrets(sm: SecretsBackend, now: float) -> list[str]:
    """The job that ends recovery windows: the secret and every version are gone for good."""
    due = sm.store.due_for_destruction(now)
    for secret_id, _arn in due:
        sm.store.destroy(secret_id)
    return [arn for _, arn in due]


OPERATIONS = {
    "CreateSecret": create_secret,
    "DescribeSecret": describe_secret,
    "UpdateSecret": update_secret,
    "DeleteSecret": delete_secret,
    "RestoreSecret": restore_secret,
}
