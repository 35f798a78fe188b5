"""Publishing secret change events.

Kinds: ``VersionCreated``, ``StagesMoved`` (detail says which labels and whether AWSCURRENT moved),
``SecretDeleted``, ``SecretRestored``, ``RotationSucceeded``, ``RotationFailed``. Events never carry a
secret value, only ids and labels. They are rows in ``change_events``, so every node's streams and the
leader's webhook delivery see them in one order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select

from khoa.storage import schema

_EVENTS = schema.change_events
_SECRETS = schema.sm_secrets
_STAGES = schema.sm_stages
_VERSIONS = schema.sm_versions


@dataclass(frozen=True)
class SecretState:
    """What a write may change of a secret. ``versions`` holds the versions with a value that carry a
    label or were created at or after the snapshot's ``since`` (``recent``: those created since), not
    every version: a busy secret keeps thousands, and a write snapshots it twice."""

    secret_id: str
    arn: str
    account_id: str
    region: str
    deleted: bool
    stages: dict[str, str]
    versions: frozenset[str]
    recent: frozenset[str] = frozenset()


def snapshot(engine: Engine, secret_id: str, since: float | None = None) -> SecretState | None:
    """The secret's state; ``since`` (epoch seconds, the write's start) also finds the versions the
    write created, through the (secret, created_at) index."""
    with engine.connect() as conn:
        row = conn.execute(
            select(_SECRETS.c.arn, _SECRETS.c.account_id, _SECRETS.c.region, _SECRETS.c.deleted_at).where(
                _SECRETS.c.secret_id == secret_id
            )
        ).first()
        if row is None:
            return None
        stages = {
            r[0]: r[1]
            for r in conn.execute(
                select(_STAGES.c.stage, _STAGES.c.version_id).where(_STAGES.c.secret_id == secret_id)
            ).all()
        }
        with_value = (_VERSIONS.c.secret_id == secret_id, _VERSIONS.c.value_kind != schema.SM_NO_VALUE)
        # A rotation's placeholder (labelled AWSPENDING) becomes a version when it gets its value.
        labelled = (
            set(
                conn.execute(
                    select(_VERSIONS.c.version_id).where(
                        *with_value, _VERSIONS.c.version_id.in_(set(stages.values()))
                    )
                ).scalars()
            )
            if stages
            else set()
        )
        recent = (
            frozenset(
                conn.execute(
                    select(_VERSIONS.c.version_id).where(*with_value, _VERSIONS.c.created_at >= since)
                ).scalars()
            )
            if since is not None
            else frozenset()
        )
    return SecretState(
        secret_id, row[0], row[1], row[2], row[3] is not None, stages, frozenset(labelled | recent), recent
    )


def publish(engine: Engine, state: SecretState, kind: str, detail: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(_EVENTS).values(
                account_id=state.account_id,
                region=state.region,
                secret_id=state.secret_id,
                secret_arn=state.arn,
                kind=kind,
                detail=json.dumps(detail),
                created_at=time.time(),
            )
        )


def publish_changes(engine: Engine, before: SecretState | None, after: SecretState | None) -> int:
    """Compare two snapshots of a secret and publish what changed; returns how many events."""
    published = 0
    state = after or before
    if state is None:
        return 0
    if after is None:
        publish(engine, state, "SecretDeleted", {"forced": True})
        return 1
    if before is not None and before.deleted != after.deleted:
        publish(engine, after, "SecretDeleted" if after.deleted else "SecretRestored", {})
        published += 1
    # New: created by this write, or a rotation's placeholder (labelled before, without a value) that
    # got its value. A version that merely gained a label was there before.
    placeholders = frozenset(before.stages.values()) - before.versions if before else frozenset()
    had = before.versions if before else frozenset()
    created = {v for v in after.versions - had if v in after.recent or v in placeholders}
    for version_id in sorted(created):
        labels = sorted(stage for stage, vid in after.stages.items() if vid == version_id)
        publish(engine, after, "VersionCreated", {"versionId": version_id, "versionStages": labels})
        published += 1
    if before is None:
        return published  # a new secret: VersionCreated already says which labels its version has
    old_stages = before.stages
    moved = {
        stage: version_id for stage, version_id in after.stages.items() if old_stages.get(stage) != version_id
    }
    removed = sorted(set(old_stages) - set(after.stages))
    if moved or removed:
        publish(
            engine,
            after,
            "StagesMoved",
            {
                "moved": moved,
                "removed": removed,
                "currentMoved": "AWSCURRENT" in moved,
                "currentVersionId": after.stages.get("AWSCURRENT"),
            },
        )
        published += 1
    return published
