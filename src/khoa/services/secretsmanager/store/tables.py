"""The statements several store methods run inside one transaction: each takes the caller's connection
and neither begins nor commits."""

from __future__ import annotations

import time

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from khoa.services.secretsmanager import errors, stages
from khoa.services.secretsmanager.store.records import SealedValue, VersionRecord
from khoa.storage import fingerprints, schema

SECRETS = schema.sm_secrets
VERSIONS = schema.sm_versions
STAGES = schema.sm_stages
TAGS = schema.sm_tags

MAX_TAGS = 50
# Deprecated versions younger than this are kept even beyond 100 versions, as AWS keeps them.
PRUNE_MIN_AGE_SECONDS = 86400.0


def lock_secret(conn: Connection, secret_id: str, now: float) -> None:
    """Start a write to a secret's versions, labels or tags by updating its row: concurrent writers to
    the same secret wait here (a row lock on PostgreSQL, the write lock on SQLite), so what is read next
    is current. A secret that is no longer there (deleted without recovery meanwhile) is AWS's
    ResourceNotFoundException, and the write rolls back: without the row its version or tag would fail
    the foreign key, which a write reads as a clash of its own (another request's token)."""
    locked = conn.execute(update(SECRETS).where(SECRETS.c.secret_id == secret_id).values(last_changed_at=now))
    if locked.rowcount != 1:
        raise errors.not_found()


def version_time(conn: Connection, secret_id: str, now: float) -> float:
    """The creation time a version written now gets: ``now``, or the secret's newest version's if that
    is later. Writers take ``now`` before they wait for the secret's lock, so without this a version
    committed after another could carry an earlier time, and its CreatedDate would contradict its
    labels (AWSCURRENT older than AWSPREVIOUS)."""
    newest = conn.execute(
        select(func.max(VERSIONS.c.created_at)).where(VERSIONS.c.secret_id == secret_id)
    ).scalar()
    return now if newest is None else max(now, float(newest))


def insert_version(
    conn: Connection, secret_id: str, version_id: str, sealed: SealedValue, created_at: float
) -> None:
    """The one insert of a version: new, placeholder (NOTHING) and replicated versions alike."""
    conn.execute(
        insert(VERSIONS).values(
            secret_id=secret_id,
            version_id=version_id,
            created_at=created_at,
            last_accessed_at=None,
            value_kind=sealed.kind,
            kms_key_arn=sealed.kms_key_arn,
            encrypted_data_key=sealed.encrypted_data_key,
            encrypted_value=sealed.encrypted_value,
        )
    )
    fingerprints.add_secret_version(conn, secret_id, version_id, sealed.fingerprints, created_at)


def delete_version(conn: Connection, secret_id: str, version_id: str) -> None:
    conn.execute(
        delete(VERSIONS).where(VERSIONS.c.secret_id == secret_id).where(VERSIONS.c.version_id == version_id)
    )


def version_in(conn: Connection, secret_id: str, version_id: str) -> VersionRecord | None:
    row = conn.execute(
        select(VERSIONS).where(VERSIONS.c.secret_id == secret_id).where(VERSIONS.c.version_id == version_id)
    ).first()
    return None if row is None else VersionRecord.from_row(row)


def stages_in(conn: Connection, secret_id: str) -> dict[str, str]:
    """The secret's labels: ``{label: version_id}``."""
    rows = conn.execute(
        select(STAGES.c.stage, STAGES.c.version_id).where(STAGES.c.secret_id == secret_id)
    ).all()
    return {r[0]: r[1] for r in rows}


def write_stages(conn: Connection, secret_id: str, before: dict[str, str], after: dict[str, str]) -> None:
    """Turn the labels ``before`` into ``after`` with as few statements as the difference needs."""
    for stage in set(before) - set(after):
        conn.execute(delete(STAGES).where(STAGES.c.secret_id == secret_id).where(STAGES.c.stage == stage))
    for stage, version_id in after.items():
        if stage not in before:
            conn.execute(insert(STAGES).values(secret_id=secret_id, stage=stage, version_id=version_id))
        elif before[stage] != version_id:
            conn.execute(
                update(STAGES)
                .where(STAGES.c.secret_id == secret_id)
                .where(STAGES.c.stage == stage)
                .values(version_id=version_id)
            )
    fingerprints.labels_moved(conn, secret_id, before, after, time.time())


def prune_deprecated(conn: Connection, secret_id: str, now: float) -> None:
    """Keep at most 100 versions, as AWS does: the oldest versions without a label go first, but a
    version created less than 24 hours ago is never removed.

    A busy secret keeps every version of the last 24 hours, so this runs on every write of a secret
    that may hold thousands: it counts them (an index-only count) and reads only the versions it
    removes, rather than every version (a write to such a secret went from 11 to 27 ms p50).
    """
    count = conn.execute(
        select(func.count()).select_from(VERSIONS).where(VERSIONS.c.secret_id == secret_id)
    ).scalar_one()
    excess = count - stages.MAX_VERSIONS
    if excess <= 0:
        return
    labelled = select(STAGES.c.version_id).where(STAGES.c.secret_id == secret_id)
    removable = conn.execute(
        select(VERSIONS.c.version_id)
        .where(VERSIONS.c.secret_id == secret_id)
        .where(VERSIONS.c.created_at <= now - PRUNE_MIN_AGE_SECONDS)
        .where(VERSIONS.c.version_id.not_in(labelled))
        .order_by(VERSIONS.c.created_at)
        .limit(excess)
    ).scalars()
    for version_id in list(removable):
        delete_version(conn, secret_id, version_id)


def write_tags(conn: Connection, secret_id: str, tags: list[dict[str, str]]) -> None:
    """Add or overwrite tags, keeping first-added order; any tag gives the secret a tag list (the
    tag_list column: AWS answers ``"Tags": []`` for a secret whose tags were all removed, and leaves
    Tags out for one never tagged). More than ``MAX_TAGS`` in all raises InvalidRequestException,
    counted here so that it rolls the caller's transaction back."""
    if not tags:
        return
    rows = conn.execute(select(TAGS.c.tag_key, TAGS.c.position).where(TAGS.c.secret_id == secret_id)).all()
    existing: dict[str, int] = {row[0]: row[1] for row in rows}
    position = conn.execute(
        select(func.coalesce(func.max(TAGS.c.position), 0)).where(TAGS.c.secret_id == secret_id)
    ).scalar_one()
    latest = {t["Key"]: t["Value"] for t in tags}
    # A new key differing only in case from one the secret has is refused (tags.validate_tags says
    # why), here, in the transaction, so that concurrent taggers can't add both.
    held = {key.lower(): key for key in existing}
    for key in latest:
        if held.get(key.lower(), key) != key:
            raise errors.tag_keys_collide(held[key.lower()], key)
    if len(set(existing) | set(latest)) > MAX_TAGS:
        raise errors.too_many_tags(MAX_TAGS)
    conn.execute(update(SECRETS).where(SECRETS.c.secret_id == secret_id).values(tag_list=True))
    for key, value in latest.items():
        if key in existing:
            conn.execute(
                update(TAGS)
                .where(TAGS.c.secret_id == secret_id)
                .where(TAGS.c.tag_key == key)
                .values(tag_value=value)
            )
        else:
            position += 1
            conn.execute(
                insert(TAGS).values(secret_id=secret_id, tag_key=key, tag_value=value, position=position)
            )


def tags_of_many(conn: Connection, secret_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each secret's tags (``Key``/``Value``, in first-added order), in one query; [] for a secret
    without tags, whether or not it has a tag list (see tag_list_of)."""
    result: dict[str, list[dict[str, str]]] = {sid: [] for sid in secret_ids}
    if not secret_ids:
        return result
    rows = conn.execute(
        select(TAGS.c.secret_id, TAGS.c.tag_key, TAGS.c.tag_value)
        .where(TAGS.c.secret_id.in_(secret_ids))
        .order_by(TAGS.c.position)
    ).all()
    for sid, key, value in rows:
        result[sid].append({"Key": key, "Value": value})
    return result


def tag_list_of(conn: Connection, secret_id: str) -> list[dict[str, str]] | None:
    """The secret's tags in first-added order, None if it has no tag list (never tagged), in one query:
    the secret's row joined to its tags."""
    rows = conn.execute(
        select(SECRETS.c.tag_list, TAGS.c.tag_key, TAGS.c.tag_value)
        .select_from(SECRETS.outerjoin(TAGS, TAGS.c.secret_id == SECRETS.c.secret_id))
        .where(SECRETS.c.secret_id == secret_id)
        .order_by(TAGS.c.position)
    ).all()
    if not rows or not rows[0][0]:
        return None
    return [{"Key": key, "Value": value} for _, key, value in rows if key is not None]
