"""Replication of a secret to other regions of the same Khoa server.

A replica is a read-only secret in another region with the primary's name and ARN suffix; each of
its versions is re-encrypted under a KMS key of the replica's own region (that region's
``aws/secretsmanager`` key unless one is named). Every write to the primary is mirrored right after it
commits, so replicas are always InSync. Writes sent to a replica are refused with AWS's
InvalidParameterException, except UpdateSecret changing only the replica's own KMS key ("A replica
secret can't be updated independently from its primary secret, except for its encryption key").
All replication state lives in the database (a replica names its primary), so these are plain
functions over the service's collaborators.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.base import Handler
from khoa.services.kms.internal import KeyRecord
from khoa.services.secretsmanager import authz, errors, names, values
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import NOTHING, SealedValue, SecretRecord

_REGION_FIELDS = (
    "description",
    "rotation_enabled",
    "rotation_lambda_arn",
    "rotation_rules",
    "last_rotated_at",
    "next_rotation_at",
    "last_changed_at",
    "secret_type",
    "deleted_at",
    "deletion_due_at",
    # "Secrets Manager replicates the encrypted secret data and metadata such as tags and resource
    # policies" (User Guide, "Replicate secrets across Regions"): a primary's policy change or deletion
    # reaches its replicas, which refuse policy writes of their own.
    "resource_policy",
)


def status(sm: SecretsBackend, record: SecretRecord) -> list[dict[str, Any]]:
    """ReplicationStatus: one entry per replica of a primary, nothing for a replica."""
    if record.primary_secret_id is not None:
        return []
    return [_status(replica) for replica in sm.store.replicas_of(record.secret_id)]


def sync(sm: SecretsBackend, ctx: RequestContext, primary: SecretRecord) -> None:
    """Make every replica mirror the primary's versions, labels, tags and metadata."""
    store = sm.store
    replicas = store.replicas_of(primary.secret_id)
    if replicas and primary.primary_region is None:
        # A primary records its own region while it has replicas, so ListSecrets knows which entries
        # have a PrimaryRegion without looking for replicas (_forget_region_if_unreplicated clears it).
        store.update(primary.secret_id, primary_region=primary.region)
    primary_versions = {v.version_id: v for v in store.versions(primary.secret_id)}
    primary_stages = store.read_stages(primary.secret_id)
    primary_tags = store.tags(primary.secret_id)  # None: never tagged, mirrored as such
    for replica in replicas:
        rctx = replace(ctx, region=replica.region)
        key: KeyRecord | None = None  # resolved when a version is to be sealed
        have = {v.version_id: v for v in store.versions(replica.secret_id)}
        # a rotation's placeholder is copied as one, and again once the primary's has a value
        stale = {v for v, mine in have.items() if mine.placeholder and v in primary_versions}
        sealed: dict[str, tuple[float, SealedValue]] = {}
        for version_id in (set(primary_versions) - set(have)) | stale:
            version = primary_versions[version_id]
            if version.placeholder:
                sealed[version_id] = (version.created_at, NOTHING)
                continue
            plaintext = values.open_value(
                sm.keys,
                ctx,
                primary.arn,
                version_id,
                version.value_kind,
                version.encrypted_data_key,
                version.encrypted_value,
            )
            if key is None:
                key = replica_key(sm, ctx, replica)
            sealed[version_id] = (
                version.created_at,
                values.seal(
                    sm.keys,
                    rctx,
                    key,
                    replica.arn,
                    version_id,
                    version.value_kind,
                    plaintext,
                    sm.fingerprinter,
                ),
            )
        store.mirror(
            replica.secret_id,
            drop=(set(have) - set(primary_versions)) | stale,
            add=sealed,
            stages=primary_stages,
            tags=primary_tags,
            fields={f: getattr(primary, f) for f in _REGION_FIELDS if f != "secret_type"},
        )


def replica_key(sm: SecretsBackend, ctx: RequestContext, replica: SecretRecord) -> KeyRecord:
    """The key a replica's versions are sealed under: its own KmsKeyId, resolved in the replica's
    account and region (values.secret_key), the caller (who wrote the primary) as KMS's principal."""
    return values.secret_key(sm.keys, ctx, replica.account_id, replica.region, replica.kms_key_id)


def _primary(sm: SecretsBackend, ctx: RequestContext, secret_id: str) -> SecretRecord:
    record = names.require(ctx, sm.store, secret_id)
    if record.primary_secret_id is not None:
        raise errors.replica_not_permitted()
    return record


def validate_regions(sm: SecretsBackend, ctx: RequestContext, specs: list[dict[str, Any]]) -> None:
    """Replica Regions must be served by this installation (KHOA_REGIONS: a replica elsewhere would
    start an audit chain in a region nobody can call) and differ from the primary's and each other."""
    regions = [spec.get("Region") for spec in specs]
    served = sm.regions
    if any(region is None or region not in served for region in regions):
        raise errors.invalid_parameter("Invalid replica region.")
    if ctx.region in regions:
        raise errors.invalid_parameter("Invalid replica region.")
    if len(set(regions)) != len(regions):
        raise errors.invalid_parameter("Duplicate replica regions are not allowed.")


def _status(replica: SecretRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Region": replica.region,
        "KmsKeyId": replica.kms_key_id or "alias/aws/secretsmanager",
        "Status": "InSync",
        "StatusMessage": "Replication succeeded",
    }
    if replica.last_accessed_at is not None:
        entry["LastAccessedDate"] = from_epoch(replica.last_accessed_at)
    return entry


def check_overwrites(
    sm: SecretsBackend,
    ctx: RequestContext,
    account_id: str,
    name: str,
    specs: list[dict[str, Any]],
    *,
    force: bool,
    primary_id: str | None = None,
) -> None:
    """Before anything is written, refuse a ForceOverwriteReplicaSecret request that would overwrite a
    secret it may not: see :func:`_refuse_overwrite`. ``account_id`` and ``name`` are the primary's
    (``primary_id``: its id, whose own replicas are not overwritten but kept)."""
    if not force:
        return
    for spec in specs:
        region = spec.get("Region")
        existing = sm.store.by_name(account_id, region, name) if isinstance(region, str) else None
        if existing is not None and (primary_id is None or existing.primary_secret_id != primary_id):
            _refuse_overwrite(sm, ctx, existing)


def _refuse_overwrite(sm: SecretsBackend, ctx: RequestContext, existing: SecretRecord) -> None:
    """ForceOverwriteReplicaSecret deletes ``existing`` (at once, with no recovery window) to put the
    replica in its place. AWS documents only secretsmanager:ReplicateSecretToRegions on the primary, and
    nothing of the secret overwritten; Khoa fails closed: the caller must be allowed
    secretsmanager:DeleteSecret with ForceDeleteWithoutRecovery on that secret, as a DeleteSecret sent
    to its own Region would be judged (its resource policy and tags included), and, as DeleteSecret
    refuses them, a replica of another primary and a primary that has replicas of its own are never
    overwritten (that would orphan or take over another secret's replication)."""
    authz.authorize_secret(
        sm,
        replace(ctx, region=existing.region),
        "secretsmanager:DeleteSecret",
        existing,
        {"SecretId": existing.arn, "ForceDeleteWithoutRecovery": True},
    )
    if existing.primary_secret_id is not None:
        raise errors.invalid_request(
            f"ForceOverwriteReplicaSecret can't overwrite the secret {existing.arn}: it is a replica of "
            "another primary secret."
        )
    replicas = sm.store.replicas_of(existing.secret_id)
    if replicas:
        regions = ", ".join(r.region for r in replicas)
        raise errors.invalid_request(
            f"ForceOverwriteReplicaSecret can't overwrite the secret {existing.arn}: it still has replica "
            f"regions [{regions}]."
        )


def _failed(region: str, spec: dict[str, Any], message: str) -> dict[str, Any]:
    return {
        "Region": region,
        "KmsKeyId": spec.get("KmsKeyId") or "alias/aws/secretsmanager",
        "Status": "Failed",
        "StatusMessage": message,
    }


def add_replicas(
    sm: SecretsBackend,
    ctx: RequestContext,
    primary: SecretRecord,
    specs: list[dict[str, Any]],
    *,
    force: bool,
) -> list[dict[str, Any]]:
    """Create replicas of ``primary`` in other regions of this server and bring them in sync; returns
    the status of every replica, failed ones included (they are not kept). A replica is of the
    primary's account, whoever asks (a caller of another account the primary's policy lets replicate)."""
    validate_regions(sm, ctx, specs)
    store = sm.store
    check_overwrites(
        sm, ctx, primary.account_id, primary.name, specs, force=force, primary_id=primary.secret_id
    )
    statuses = []
    suffix = primary.arn[-7:]
    for spec in specs:
        region = spec["Region"]
        existing = store.by_name(primary.account_id, region, primary.name)
        if existing is not None and existing.primary_secret_id == primary.secret_id:
            statuses.append(_status(existing))
            continue
        if existing is not None:
            if not force:
                statuses.append(_failed(region, spec, "Secret with this name already exists in this region"))
                continue
            try:  # checked above; again for a secret made or changed since
                _refuse_overwrite(sm, ctx, existing)
            except AWSError as exc:
                statuses.append(_failed(region, spec, exc.message or exc.code))
                continue
            store.destroy(existing.secret_id)
        try:
            values.secret_key(sm.keys, ctx, primary.account_id, region, spec.get("KmsKeyId") or None)
        except AWSError as exc:
            statuses.append(_failed(region, spec, exc.message or exc.code))
            continue
        arn = f"arn:aws:secretsmanager:{region}:{primary.account_id}:secret:{primary.name}{suffix}"
        replica = replace(
            primary,
            secret_id=str(uuid.uuid4()),
            region=region,
            arn=arn,
            kms_key_id=spec.get("KmsKeyId") or None,
            last_accessed_at=None,
            resource_policy=primary.resource_policy,
            primary_region=ctx.region,
            primary_secret_id=primary.secret_id,
        )
        store.add_replica(replica)
        statuses.append(_status(replica))
    sync(sm, ctx, primary)  # also records the primary's region once it has replicas
    return statuses


def _forget_region_if_unreplicated(sm: SecretsBackend, primary_id: str) -> None:
    """A primary's primary_region says it has replicas (AWS returns PrimaryRegion only for replicated
    secrets; :func:`sync` sets it): cleared once its last replica is gone."""
    if not sm.store.replicas_of(primary_id):
        sm.store.update(primary_id, primary_region=None)


def replicate_secret_to_regions(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    primary = _primary(sm, ctx, params["SecretId"])
    statuses = add_replicas(
        sm, ctx, primary, params["AddReplicaRegions"], force=params.get("ForceOverwriteReplicaSecret", False)
    )
    return {"ARN": primary.arn, "ReplicationStatus": statuses}


def remove_regions_from_replication(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    primary = _primary(sm, ctx, params["SecretId"])
    removing = set(params["RemoveReplicaRegions"])
    for replica in sm.store.replicas_of(primary.secret_id):
        if replica.region in removing:
            sm.store.destroy(replica.secret_id)
    _forget_region_if_unreplicated(sm, primary.secret_id)
    return {"ARN": primary.arn, "ReplicationStatus": status(sm, primary)}


def stop_replication_to_replica(
    sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    if record.primary_secret_id is None:
        raise errors.invalid_request("This operation is only supported on replica secrets.")
    sm.store.update(
        record.secret_id, primary_secret_id=None, primary_region=None, last_changed_at=ctx.now.timestamp()
    )
    _forget_region_if_unreplicated(sm, record.primary_secret_id)
    return {"ARN": record.arn}


def _cross_account(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _primary(sm, ctx, params["SecretId"])
    raise errors.invalid_request("Cross-account replication is not supported by Khoa.")


def _replica_may(ctx: RequestContext, params: dict[str, Any]) -> bool:
    """A replica can't be updated independently of its primary, except for its encryption key."""
    return ctx.operation == "UpdateSecret" and set(params) <= {"SecretId", "KmsKeyId", "ClientRequestToken"}


def mirrored(sm: SecretsBackend, handler: Handler) -> Handler:
    """Wrap a write: refuse it on replicas, and mirror the primary to its replicas after it commits."""

    def wrapped(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        record = names.find(ctx, sm.store, params["SecretId"])
        if record is not None and record.primary_secret_id is not None and not _replica_may(ctx, params):
            raise errors.replica_not_permitted()
        if (
            record is not None
            and record.account_id != ctx.account_id
            and ("SecretString" in params or "SecretBinary" in params)
        ):
            # A new value is sealed for every replica too, under each replica's key as resolved for
            # this caller of another account (refused for an AWS-managed one): refused before the
            # primary is written rather than after, with the replicas left behind.
            for replica in sm.store.replicas_of(record.secret_id):
                replica_key(sm, ctx, replica)
        result = handler(ctx, params)
        if record is not None:
            fresh = sm.store.by_id(record.secret_id)
            if fresh is not None and sm.store.replicas_of(fresh.secret_id):
                sync(sm, ctx, fresh)
        return result

    return wrapped


def wrap_all(sm: SecretsBackend, handlers: dict[str, Handler], writes: tuple[str, ...]) -> dict[str, Handler]:
    """Wrap the ``writes`` among ``handlers`` with :func:`mirrored`."""
    return {name: (mirrored(sm, h) if name in writes else h) for name, h in handlers.items()}


OPERATIONS = {
    "ReplicateSecretToRegions": replicate_secret_to_regions,
    "RemoveRegionsFromReplication": remove_regions_from_replication,
    "StopReplicationToReplica": stop_replication_to_replica,
    "AssociateCrossAccountReplica": _cross_account,
    "DisassociateCrossAccountReplica": _cross_account,
}
