"""Persistence of KMS keys and their material versions, and the per-process caches in front of them.

Material is sealed by the barrier with a binding to its key and version, and opened material is
cached per process by version id: a version's material never changes, and every use re-reads the key
row first, so a deleted or disabled key is refused before any cached material is touched.

Writes that depend on what a handler read (a state change allowed only from some states, new material
numbered after the key's last version) are conditional: ``when`` names the key-row values the write
requires, checked by the write itself. A transaction that reads before it writes first *claims* the
key row (an UPDATE of the row that changes nothing, under those conditions): on PostgreSQL that locks
the row until commit, so concurrent writers of one key queue and each reads what the one before
committed; on SQLite the claim is the transaction's first write, which takes the database's write
lock before anything is read (pysqlite begins a transaction only at its first write). A condition no
longer met raises KeyChanged, and nothing is written.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, Engine, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache, private_copy
from khoa.clock import from_epoch
from khoa.crypto.barrier import Barrier
from khoa.storage import schema

_KEYS = schema.kms_keys
_VERSIONS = schema.kms_key_versions


@dataclass
class KeyRecord:
    key_id: str
    account_id: str
    region: str
    description: str
    key_spec: str
    key_usage: str
    origin: str
    key_manager: str
    state: str
    created_at: float
    deletion_date: float | None
    pending_window_days: int | None
    policy: str
    rotation_enabled: bool
    rotation_period_days: int | None
    next_rotation_at: float | None
    on_demand_started_at: float | None
    current_version_id: str | None
    valid_to: float | None
    expiration_model: str | None
    multi_region: bool

    @property
    def arn(self) -> str:
        return key_arn(self.region, self.account_id, self.key_id)

    @property
    def created(self) -> datetime:
        created = from_epoch(self.created_at)
        assert created is not None
        return created

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class VersionRecord:
    version_id: str
    seq: int
    created_at: float
    rotation_type: str | None
    has_material: bool


class KeyChanged(Exception):
    """The key's row no longer holds what the write required (another call changed it, or deleted the
    key, after the handler read it): nothing was written."""


class VersionLimitReached(Exception):
    """The key has as many versions of the rotation type as allowed already: nothing was written."""


class MaterialMismatch(Exception):
    """Imported material differs from the material the key had before: nothing was written."""


# What ``when`` may require of a key row: a value (None: NULL) or any of several (a tuple).
Conditions = Mapping[str, Any]


def _matching(key_id: str, when: Conditions | None) -> list[ColumnElement[bool]]:
    conditions = [_KEYS.c.key_id == key_id]
    for name, expected in (when or {}).items():
        column = _KEYS.c[name]
        if isinstance(expected, tuple):
            conditions.append(column.in_(expected))
        elif expected is None:
            conditions.append(column.is_(None))
        else:
            conditions.append(column == expected)
    return conditions


def _claim(conn: Connection, key_id: str, when: Conditions | None) -> None:
    """Lock the key's row for this transaction if it still holds ``when`` (see the module's
    docstring); KeyChanged otherwise."""
    result = conn.execute(update(_KEYS).where(*_matching(key_id, when)).values(state=_KEYS.c.state))
    if result.rowcount != 1:
        raise KeyChanged(key_id)


def digest_of(material: bytes) -> str:
    """What the versions table keeps of material, to tell whether imported material is the same."""
    return hashlib.sha256(b"khoa-material-digest" + material).hexdigest()


def key_arn(region: str, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:key/{key_id}"


def new_material_id() -> str:
    return secrets.token_hex(32)


def _binding(key_id: str, version_id: str) -> str:
    return f"kms_key_versions:{key_id}:{version_id}"


class KeyStore:
    def __init__(self, engine: Engine, barrier: Barrier, cache_seconds: float = METADATA_SECONDS) -> None:
        self._engine = engine
        self._barrier = barrier
        # (key, material version) → opened material; keyed by both so a version is only ever its key's.
        self._material: dict[tuple[str, str], bytes] = {}
        # The same, as AES-GCM ciphers of symmetric material: a cipher made once decrypts for a third
        # of the CPU of one made per call (its key schedule is done once), on every Decrypt.
        self._ciphers: dict[tuple[str, str], AESGCM] = {}
        self._rows: TTLCache[str, KeyRecord | None] = TTLCache(cache_seconds)
        # (account, region, alias name) → target key id; cleared whole on any alias change. Held here
        # (and shared with the alias store, which reads and clears it) because destroying a key
        # deletes its aliases in the same transaction.
        self.alias_targets: TTLCache[tuple[str, str, str], str | None] = TTLCache(cache_seconds)

    # -- keys -------------------------------------------------------------------------------------
    def _row(self, key_id: str) -> KeyRecord | None:
        """The key's row, from the short-lived cache or the database (key ids are globally unique)."""
        cached = self._rows.get(key_id)
        if cached is not MISSING:
            return cached
        with self._engine.connect() as conn:
            row = conn.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).first()
        record = None if row is None else KeyRecord.from_row(row)
        self._rows.put(key_id, record)
        return record

    def fresh(self, key_id: str) -> KeyRecord | None:
        """The key's row as the database holds it now (the cache refreshed): what a handler whose
        conditional write found the key changed judges again."""
        self._rows.invalidate(key_id)
        record = self._row(key_id)
        return None if record is None else private_copy(record)

    def get(self, account_id: str, region: str, key_id: str) -> KeyRecord | None:
        record = self._row(key_id)
        if record is None or record.account_id != account_id or record.region != region:
            return None
        return private_copy(record)

    def by_blob(self, region: str, key_id: str) -> KeyRecord | None:
        """The key a ciphertext names, in any account: whether the caller may use another account's
        key is the key policy's decision."""
        record = self._row(key_id)
        return None if record is None or record.region != region else private_copy(record)

    def insert(
        self, record: KeyRecord, material: bytes | None, now: float, tags: dict[str, str] | None = None
    ) -> None:
        """Store a new key with its first material and tags in one transaction: never half a key."""
        self._rows.invalidate(record.key_id)
        values = {f.name: getattr(record, f.name) for f in fields(KeyRecord)}
        with self._engine.begin() as conn:
            conn.execute(insert(_KEYS).values(**values))
            if material is not None and record.current_version_id is not None:
                self._insert_version(conn, record.key_id, record.current_version_id, 1, material, now, None)
            if tags:
                conn.execute(
                    insert(schema.kms_tags),
                    [{"key_id": record.key_id, "tag_key": k, "tag_value": v} for k, v in tags.items()],
                )

    def update(self, key_id: str, *, when: Conditions | None = None, **values: Any) -> bool:
        """Write ``values`` to the key's row if it holds ``when`` (in the same statement); False when
        it does not (or the key is gone), and nothing was written."""
        self._rows.invalidate(key_id)
        with self._engine.begin() as conn:
            result = conn.execute(update(_KEYS).where(*_matching(key_id, when)).values(**values))
        self._rows.invalidate(key_id)
        return result.rowcount == 1

    def cancel_deletion(self, key_id: str) -> str | None:
        """End the key's deletion window: the key comes back Disabled, or PendingImport when its
        current version has no material (an EXTERNAL key never imported, or whose material was
        deleted), as in AWS. Decided with the row claimed, so a DeleteImportedKeyMaterial racing it is
        before or after, never between. The state set; None when the key is not PendingDeletion."""
        self._rows.invalidate(key_id)
        with self._engine.begin() as conn:
            try:
                _claim(conn, key_id, {"state": "PendingDeletion"})
            except KeyChanged:
                return None
            current = select(_KEYS.c.current_version_id).where(_KEYS.c.key_id == key_id).scalar_subquery()
            has_material = conn.execute(
                select(func.count())
                .select_from(_VERSIONS)
                .where(_VERSIONS.c.key_id == key_id)
                .where(_VERSIONS.c.version_id == current)
                .where(_VERSIONS.c.material_sealed.is_not(None))
            ).scalar_one()
            state = "Disabled" if has_material else "PendingImport"
            conn.execute(
                update(_KEYS)
                .where(_KEYS.c.key_id == key_id)
                .values(state=state, deletion_date=None, pending_window_days=None)
            )
        self._rows.invalidate(key_id)
        return state

    def list_page(self, account_id: str, region: str, limit: int, offset: int) -> list[KeyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_KEYS)
                .where(_KEYS.c.account_id == account_id)
                .where(_KEYS.c.region == region)
                .order_by(_KEYS.c.created_at, _KEYS.c.key_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [KeyRecord.from_row(r) for r in rows]

    def customer_managed_count(self, account_id: str, region: str, at_least: int) -> int:
        """How many customer managed keys the account has in the region, exactly once there are at
        least ``at_least`` keys of any kind (else the count of every key, read from the index on
        (account, region) alone: CreateKey's quota check costs one index range until it matters)."""
        where = (_KEYS.c.account_id == account_id, _KEYS.c.region == region)
        with self._engine.connect() as conn:
            every = int(conn.execute(select(func.count()).select_from(_KEYS).where(*where)).scalar_one())
            if every < at_least:
                return every
            query = select(func.count()).select_from(_KEYS).where(*where, _KEYS.c.key_manager == "CUSTOMER")
            return int(conn.execute(query).scalar_one())

    def due(self, column: str, now: float) -> list[KeyRecord]:
        col = _KEYS.c[column]
        with self._engine.connect() as conn:
            rows = conn.execute(select(_KEYS).where(col.is_not(None)).where(col <= now)).all()
        return [KeyRecord.from_row(r) for r in rows]

    def destroy(self, key_id: str, *, when: Conditions | None = None) -> bool:
        """Delete a key, its material, aliases, tags and grants: its ciphertexts become undecryptable.
        With ``when``, only a key whose row still holds it (a CancelKeyDeletion that committed first
        keeps its key); False when nothing was deleted for that reason."""
        with self._engine.begin() as conn:
            if when is not None:
                try:
                    _claim(conn, key_id, when)
                except KeyChanged:
                    return False
            conn.execute(delete(schema.kms_aliases).where(schema.kms_aliases.c.target_key_id == key_id))
            conn.execute(delete(schema.kms_tags).where(schema.kms_tags.c.key_id == key_id))
            conn.execute(delete(schema.kms_grants).where(schema.kms_grants.c.key_id == key_id))
            conn.execute(
                delete(schema.kms_import_parameters).where(schema.kms_import_parameters.c.key_id == key_id)
            )
            conn.execute(delete(_VERSIONS).where(_VERSIONS.c.key_id == key_id))
            conn.execute(delete(_KEYS).where(_KEYS.c.key_id == key_id))
        self._forget_material()
        self._rows.invalidate(key_id)
        self.alias_targets.clear()
        return True

    # -- material versions ------------------------------------------------------------------------
    def _insert_version(
        self,
        conn: Connection,
        key_id: str,
        version_id: str,
        seq: int,
        material: bytes,
        now: float,
        rotation_type: str | None,
    ) -> None:
        conn.execute(
            insert(_VERSIONS).values(
                version_id=version_id,
                key_id=key_id,
                seq=seq,
                material_sealed=self._barrier.seal(material, _binding(key_id, version_id)),
                material_digest=digest_of(material),
                created_at=now,
                rotation_type=rotation_type,
            )
        )

    def add_version(
        self,
        key_id: str,
        material: bytes,
        now: float,
        rotation_type: str | None,
        *,
        when: Conditions | None = None,
        max_of_type: int | None = None,
        **key_values: Any,
    ) -> str:
        """Add new material and make it current, atomically with any other key-row changes, if the
        key's row holds ``when`` (KeyChanged otherwise) and, with ``max_of_type``, the key has fewer
        versions of ``rotation_type`` than that (VersionLimitReached otherwise). Numbered and counted
        with the row claimed: concurrent rotations of one key queue, each after the one before."""
        self._rows.invalidate(key_id)
        version_id = new_material_id()
        with self._engine.begin() as conn:
            _claim(conn, key_id, when)
            if max_of_type is not None:
                made = conn.execute(
                    select(func.count())
                    .select_from(_VERSIONS)
                    .where(_VERSIONS.c.key_id == key_id)
                    .where(_VERSIONS.c.rotation_type == rotation_type)
                ).scalar_one()
                if made >= max_of_type:
                    raise VersionLimitReached(key_id)
            seq = (
                conn.execute(
                    select(func.coalesce(func.max(_VERSIONS.c.seq), 0)).where(_VERSIONS.c.key_id == key_id)
                ).scalar_one()
                + 1
            )
            self._insert_version(conn, key_id, version_id, seq, material, now, rotation_type)
            conn.execute(
                update(_KEYS)
                .where(_KEYS.c.key_id == key_id)
                .values(current_version_id=version_id, **key_values)
            )
        self._rows.invalidate(key_id)
        return version_id

    def material(self, key_id: str, version_id: str) -> bytes | None:
        cached = self._material.get((key_id, version_id))
        if cached is not None:
            return cached
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(_VERSIONS.c.material_sealed)
                .where(_VERSIONS.c.version_id == version_id)
                .where(_VERSIONS.c.key_id == key_id)
            ).scalar()
        if sealed is None:
            return None
        material = self._barrier.open(sealed, _binding(key_id, version_id))
        if len(self._material) > 100_000:
            self._forget_material()
        self._material[(key_id, version_id)] = material
        return material

    def _forget_material(self) -> None:
        self._material.clear()
        self._ciphers.clear()

    def cipher(self, key_id: str, version_id: str) -> AESGCM | None:
        """The AES-GCM cipher of a symmetric key's material version (None: no such version)."""
        cipher = self._ciphers.get((key_id, version_id))
        if cipher is None:
            material = self.material(key_id, version_id)
            if material is None:
                return None
            cipher = self._ciphers[(key_id, version_id)] = AESGCM(material)
        return cipher

    def versions(self, key_id: str) -> list[VersionRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    _VERSIONS.c.version_id,
                    _VERSIONS.c.seq,
                    _VERSIONS.c.created_at,
                    _VERSIONS.c.rotation_type,
                    _VERSIONS.c.material_sealed.is_not(None),
                )
                .where(_VERSIONS.c.key_id == key_id)
                .order_by(_VERSIONS.c.seq)
            ).all()
        return [VersionRecord(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def material_digest(self, key_id: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(
                select(_VERSIONS.c.material_digest)
                .where(_VERSIONS.c.key_id == key_id)
                .order_by(_VERSIONS.c.seq)
                .limit(1)
            ).scalar()

    def set_imported_material(
        self, key_id: str, material: bytes, now: float, *, when: Conditions | None = None, **key_values: Any
    ) -> str:
        """Store (or restore) imported material as the key's single version, if the key's row holds
        ``when`` (KeyChanged otherwise). Material other than the key had before is refused with
        MaterialMismatch, checked with the row claimed: of two different imports racing into a new
        key, one is stored and the other refused, never both acknowledged."""
        self._rows.invalidate(key_id)
        with self._engine.begin() as conn:
            _claim(conn, key_id, when)
            row = conn.execute(
                select(_VERSIONS.c.version_id, _VERSIONS.c.material_digest)
                .where(_VERSIONS.c.key_id == key_id)
                .order_by(_VERSIONS.c.seq)
                .limit(1)
            ).first()
            existing = None if row is None else row.version_id
            if row is not None and row.material_digest not in (None, digest_of(material)):
                raise MaterialMismatch(key_id)
            version_id = existing or new_material_id()
            if existing:
                conn.execute(
                    update(_VERSIONS)
                    .where(_VERSIONS.c.version_id == existing)
                    .values(material_sealed=self._barrier.seal(material, _binding(key_id, existing)))
                )
            else:
                self._insert_version(conn, key_id, version_id, 1, material, now, None)
            conn.execute(
                update(_KEYS)
                .where(_KEYS.c.key_id == key_id)
                .values(current_version_id=version_id, **key_values)
            )
        self._material.pop((key_id, version_id), None)
        self._ciphers.pop((key_id, version_id), None)
        self._rows.invalidate(key_id)
        return version_id

    def drop_imported_material(
        self, key_id: str, *, when: Conditions | None = None, **key_values: Any
    ) -> bool:
        """Destroy imported material but keep the digest so only the same material can return, if the
        key's row holds ``when`` (its values set first, under it); False, and nothing written, if not."""
        self._rows.invalidate(key_id)
        with self._engine.begin() as conn:
            try:
                if key_values:
                    changed = conn.execute(update(_KEYS).where(*_matching(key_id, when)).values(**key_values))
                    if changed.rowcount != 1:
                        raise KeyChanged(key_id)
                else:
                    _claim(conn, key_id, when)
            except KeyChanged:
                return False
            conn.execute(update(_VERSIONS).where(_VERSIONS.c.key_id == key_id).values(material_sealed=None))
        self._forget_material()
        self._rows.invalidate(key_id)
        return True

    def clear_cache(self) -> None:
        self._forget_material()
        self._rows.clear()
        self.alias_targets.clear()
