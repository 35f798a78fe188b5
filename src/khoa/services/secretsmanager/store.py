"""Secrets Manager persistence: secrets, encrypted versions, staging labels and tags."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.storage import schema

SECRETS = schema.sm_secrets
VERSIONS = schema.sm_versions
STAGES = schema.sm_stages
TAGS = schema.sm_tags
# The value kind of a version that has an ID and labels but no value yet: what a rotation creates
# before its function's createSecret step puts the new value in it, as Secrets Manager does (the
# function finds its ClientRequestToken among the secret's versions, labelled AWSPENDING; reading
# it answers ResourceNotFoundException until a value is put).
PLACEHOLDER = schema.SM_NO_VALUE


@dataclass
class SecretRecord:
    secret_id: str
    account_id: str
    region: str
    name: str
    arn: str
    description: str | None
    kms_key_id: str | None
    created_at: float
    last_changed_at: float
    last_accessed_at: float | None
    deleted_at: float | None
    deletion_due_at: float | None
    rotation_enabled: bool
    rotation_lambda_arn: str | None
    rotation_rules: str | None
    last_rotated_at: float | None
    next_rotation_at: float | None
    resource_policy: str | None
    primary_region: str | None
    primary_secret_id: str | None
    owning_service: str | None
    secret_type: str | None

    @classmethod
    def from_row(cls, row: Any) -> SecretRecord:
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def rules(self) -> dict[str, Any] | None:
        return json.loads(self.rotation_rules) if self.rotation_rules else None


@dataclass(frozen=True)
class VersionRecord:
    version_id: str
    created_at: float
    last_accessed_at: float | None
    value_kind: str
    kms_key_arn: str
    encrypted_data_key: bytes
    encrypted_value: bytes

    @property
    def placeholder(self) -> bool:
        return self.value_kind == PLACEHOLDER


@dataclass(frozen=True)
class SealedValue:
    """A version's value as stored: sealed by ``values.seal``, or NOTHING."""

    kind: str  # "string" or "binary"; PLACEHOLDER for NOTHING
    kms_key_arn: str
    encrypted_data_key: bytes
    encrypted_value: bytes


NOTHING = SealedValue(PLACEHOLDER, "", b"", b"")  # a rotation's version before it has a value


def insert_version(
    conn: Connection, secret_id: str, version_id: str, sealed: SealedValue, created_at: float
) -> None:
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


class SecretStore:
    """Reads are cached for ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS, see khoa.cache); every
    write in this process clears the cache, and Secrets Manager's writes all go through
    ``invalidate_all`` (see __init__.py)."""

    def __init__(self, engine: Engine, cache_seconds: float = METADATA_SECONDS) -> None:
        self.engine = engine
        self._records: TTLCache[tuple[str, ...], SecretRecord | None] = TTLCache(cache_seconds)
        self._stages: TTLCache[str, dict[str, str]] = TTLCache(cache_seconds)
        self._versions: TTLCache[tuple[str, str], VersionRecord | None] = TTLCache(cache_seconds)
        self._tags: TTLCache[str, list[dict[str, str]]] = TTLCache(cache_seconds)

    def invalidate_all(self) -> None:
        for cache in (self._records, self._stages, self._versions, self._tags):
            cache.clear()

    def by_name(self, account_id: str, region: str, name: str) -> SecretRecord | None:
        key = ("name", account_id, region, name)
        cached = self._records.get(key)
        if cached is not MISSING:
            return None if cached is None else replace(cached)
        record = self._by_name(account_id, region, name)
        self._records.put(key, record)
        return None if record is None else replace(record)

    def _by_name(self, account_id: str, region: str, name: str) -> SecretRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(SECRETS)
                .where(SECRETS.c.account_id == account_id)
                .where(SECRETS.c.region == region)
                .where(SECRETS.c.name == name)
            ).first()
        return None if row is None else SecretRecord.from_row(row)

    def by_arn(self, arn: str) -> SecretRecord | None:
        key = ("arn", arn)
        cached = self._records.get(key)
        if cached is not MISSING:
            return None if cached is None else replace(cached)
        with self.engine.connect() as conn:
            row = conn.execute(select(SECRETS).where(SECRETS.c.arn == arn)).first()
        record = None if row is None else SecretRecord.from_row(row)
        self._records.put(key, record)
        return None if record is None else replace(record)

    def by_id(self, secret_id: str) -> SecretRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(SECRETS).where(SECRETS.c.secret_id == secret_id)).first()
        return None if row is None else SecretRecord.from_row(row)

    def update(self, secret_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(SECRETS).where(SECRETS.c.secret_id == secret_id).values(**values))
        self.invalidate_all()

    # -- versions and stages -----------------------------------------------------------------------
    def stages(self, conn: Connection, secret_id: str) -> dict[str, str]:
        rows = conn.execute(
            select(STAGES.c.stage, STAGES.c.version_id).where(STAGES.c.secret_id == secret_id)
        ).all()
        return {r[0]: r[1] for r in rows}

    def add_placeholder(self, conn: Connection, secret_id: str, version_id: str, now: float) -> None:
        """Give a rotation's token its version (no value: see PLACEHOLDER) unless it has one, and
        move AWSPENDING to it. The caller commits, then clears the cache."""
        if self.version_in(conn, secret_id, version_id) is None:
            insert_version(conn, secret_id, version_id, NOTHING, now)
        before = self.stages(conn, secret_id)
        self.write_stages(conn, secret_id, before, {**before, "AWSPENDING": version_id})

    def read_stages(self, secret_id: str) -> dict[str, str]:
        cached = self._stages.get(secret_id)
        if cached is not MISSING:
            return dict(cached)
        with self.engine.connect() as conn:
            stages = self.stages(conn, secret_id)
        self._stages.put(secret_id, stages)
        return dict(stages)

    @staticmethod
    def write_stages(conn: Connection, secret_id: str, before: dict[str, str], after: dict[str, str]) -> None:
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

    def version(self, secret_id: str, version_id: str) -> VersionRecord | None:
        cached = self._versions.get((secret_id, version_id))
        if cached is not MISSING:
            return cached
        with self.engine.connect() as conn:
            version = self.version_in(conn, secret_id, version_id)
        self._versions.put((secret_id, version_id), version)
        return version

    @staticmethod
    def version_in(conn: Connection, secret_id: str, version_id: str) -> VersionRecord | None:
        row = conn.execute(
            select(VERSIONS)
            .where(VERSIONS.c.secret_id == secret_id)
            .where(VERSIONS.c.version_id == version_id)
        ).first()
        if row is None:
            return None
        return VersionRecord(
            row.version_id,
            row.created_at,
            row.last_accessed_at,
            row.value_kind,
            row.kms_key_arn,
            row.encrypted_data_key,
            row.encrypted_value,
        )

    def versions(self, secret_id: str) -> list[VersionRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(VERSIONS).where(VERSIONS.c.secret_id == secret_id).order_by(VERSIONS.c.created_at)
            ).all()
        return [
            VersionRecord(
                r.version_id,
                r.created_at,
                r.last_accessed_at,
                r.value_kind,
                r.kms_key_arn,
                r.encrypted_data_key,
                r.encrypted_value,
            )
            for r in rows
        ]

    # -- tags ----------------------------------------------------------------------------------------
    def tags(self, secret_id: str) -> list[dict[str, str]]:
        cached = self._tags.get(secret_id)
        if cached is not MISSING:
            return [dict(t) for t in cached]
        tags = self._load_tags(secret_id)
        self._tags.put(secret_id, tags)
        return [dict(t) for t in tags]

    def _load_tags(self, secret_id: str) -> list[dict[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TAGS.c.tag_key, TAGS.c.tag_value)
                .where(TAGS.c.secret_id == secret_id)
                .order_by(TAGS.c.position)
            ).all()
        return [{"Key": r[0], "Value": r[1]} for r in rows]

    def many_tags(self, secret_ids: list[str]) -> dict[str, list[dict[str, str]]]:
        result: dict[str, list[dict[str, str]]] = {sid: [] for sid in secret_ids}
        if not secret_ids:
            return result
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TAGS.c.secret_id, TAGS.c.tag_key, TAGS.c.tag_value)
                .where(TAGS.c.secret_id.in_(secret_ids))
                .order_by(TAGS.c.position)
            ).all()
        for sid, key, value in rows:
            result[sid].append({"Key": key, "Value": value})
        return result

    def many_stages(self, secret_ids: list[str]) -> dict[str, dict[str, list[str]]]:
        result: dict[str, dict[str, list[str]]] = {sid: {} for sid in secret_ids}
        if not secret_ids:
            return result
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(STAGES.c.secret_id, STAGES.c.version_id, STAGES.c.stage).where(
                    STAGES.c.secret_id.in_(secret_ids)
                )
            ).all()
        for sid, version_id, stage in rows:
            result[sid].setdefault(version_id, []).append(stage)
        return result

    def destroy(self, secret_id: str) -> None:
        with self.engine.begin() as conn:
            for table in (STAGES, TAGS, VERSIONS):
                conn.execute(delete(table).where(table.c.secret_id == secret_id))
            conn.execute(delete(SECRETS).where(SECRETS.c.secret_id == secret_id))
        self.invalidate_all()
