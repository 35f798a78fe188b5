"""The secret store: every read and write of a secret, its versions, labels and tags, each write one
transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.cache import METADATA_SECONDS, TTLCache, private_copy
from khoa.services.secretsmanager import errors
from khoa.services.secretsmanager.store import search
from khoa.services.secretsmanager.store.access import Access, AccessLog
from khoa.services.secretsmanager.store.records import (
    NOTHING,
    PLACEHOLDER,
    SealedValue,
    SecretRecord,
    VersionRecord,
)
from khoa.services.secretsmanager.store.tables import (
    SECRETS,
    STAGES,
    TAGS,
    VERSIONS,
    delete_version,
    insert_version,
    lock_secret,
    prune_deprecated,
    stages_in,
    tag_list_of,
    tags_of_many,
    version_in,
    version_time,
    write_stages,
    write_tags,
)
from khoa.storage import fingerprints
from khoa.storage.database import in_chunks

# What a write does to a secret's labels: given them as read inside its transaction (``{label:
# version_id}``), the labels to store. It may raise (an AWSError), which rolls the write back.
Relabel = Callable[[dict[str, str]], dict[str, str]]


class SecretStore:
    """Reads are cached for ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS, see khoa.cache); every
    write in this process clears the cache, and Secrets Manager's writes all go through
    ``invalidate_all`` (see __init__.py)."""

    def __init__(self, engine: Engine, cache_seconds: float = METADATA_SECONDS) -> None:
        self._engine = engine
        self._records: TTLCache[tuple[str, ...], SecretRecord | None] = TTLCache(cache_seconds)
        self._stages: TTLCache[str, dict[str, str]] = TTLCache(cache_seconds)
        self._versions: TTLCache[tuple[str, str], VersionRecord | None] = TTLCache(cache_seconds)
        self._tags: TTLCache[str, list[dict[str, str]] | None] = TTLCache(cache_seconds)
        # Reads note the day they read a secret here; it writes LastAccessedDate off their path, once
        # the trail has recorded them (see access.py).
        self.access = AccessLog(engine, self._accessed)

    def invalidate_all(self) -> None:
        for cache in (self._records, self._stages, self._versions, self._tags):
            cache.clear()

    # -- secrets -------------------------------------------------------------------------------------
    def by_name(self, account_id: str, region: str, name: str) -> SecretRecord | None:
        def load() -> SecretRecord | None:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(SECRETS)
                    .where(SECRETS.c.account_id == account_id)
                    .where(SECRETS.c.region == region)
                    .where(SECRETS.c.name == name)
                ).first()
            return None if row is None else SecretRecord.from_row(row)

        record = self._records.load(("name", account_id, region, name), load)
        return None if record is None else private_copy(record)

    def by_arn(self, arn: str) -> SecretRecord | None:
        def load() -> SecretRecord | None:
            with self._engine.connect() as conn:
                row = conn.execute(select(SECRETS).where(SECRETS.c.arn == arn)).first()
            return None if row is None else SecretRecord.from_row(row)

        record = self._records.load(("arn", arn), load)
        return None if record is None else private_copy(record)

    def by_id(self, secret_id: str) -> SecretRecord | None:
        """Uncached: what a write just left (replication mirrors it)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(SECRETS).where(SECRETS.c.secret_id == secret_id)).first()
        return None if row is None else SecretRecord.from_row(row)

    def replicas_of(self, primary_id: str) -> list[SecretRecord]:
        """The primary's replicas, one per region, in region order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(SECRETS).where(SECRETS.c.primary_secret_id == primary_id).order_by(SECRETS.c.region)
            ).all()
        return [SecretRecord.from_row(r) for r in rows]

    def due_for_destruction(self, now: float) -> list[tuple[str, str]]:
        """(secret id, ARN) of every secret whose recovery window has ended by ``now``."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(SECRETS.c.secret_id, SECRETS.c.arn)
                .where(SECRETS.c.deletion_due_at.is_not(None))
                .where(SECRETS.c.deletion_due_at <= now)
            ).all()
        return [(secret_id, arn) for secret_id, arn in rows]

    def page(
        self,
        account_id: str,
        region: str,
        filters: list[dict[str, Any]],
        *,
        include_deleted: bool,
        limit: int,
        after: search.Keyset | None,
        sort_by: str = "created-date",
        descending: bool = False,
    ) -> tuple[list[SecretRecord], search.Keyset | None]:
        """A page of ListSecrets (see store.search): its secrets and where the next page starts."""
        return search.page(
            self._engine,
            account_id,
            region,
            filters,
            include_deleted=include_deleted,
            limit=limit,
            after=after,
            sort_by=sort_by,
            descending=descending,
        )

    def create(
        self,
        record: SecretRecord,
        tags: list[dict[str, str]],
        first: tuple[str, SealedValue] | None,
        labels: dict[str, str],
    ) -> None:
        """Store a new secret with its tags and, if given, its first version (id, value) carrying
        ``labels``, in one transaction. A secret of that name stored first by a concurrent CreateSecret
        raises ResourceExistsException."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(SECRETS).values(**record.values()))
                if first is not None:
                    insert_version(conn, record.secret_id, first[0], first[1], record.created_at)
                    write_stages(conn, record.secret_id, {}, labels)
                write_tags(conn, record.secret_id, tags)
        except IntegrityError:
            # The caller may look at the secret stored first: not at this process's cached "no such
            # secret", read a moment before (a CreateSecret retried while its first try ran).
            self.invalidate_all()
            raise errors.secret_exists(record.name) from None

    def add_replica(self, replica: SecretRecord) -> None:
        """Store a replica's row; its versions, labels and tags come with :meth:`mirror`."""
        with self._engine.begin() as conn:
            conn.execute(insert(SECRETS).values(**replica.values()))

    def update(self, secret_id: str, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(SECRETS).where(SECRETS.c.secret_id == secret_id).values(**values))
        self.invalidate_all()

    def _accessed(self, accesses: list[Access]) -> None:
        """The access log wrote LastAccessedDate of these (on its thread): forget what was cached."""
        self._records.clear()  # (cached by name and by ARN)
        for secret_id, version_id, _ in accesses:
            self._versions.invalidate((secret_id, version_id))

    def destroy(self, secret_id: str) -> None:
        """Delete the secret and everything of it (nothing if it is gone already)."""
        with self._engine.begin() as conn:
            # The secret's row first, as every writer to the secret locks it first (lock_secret): a
            # PutSecretValue holding it while this deleted the versions and labels first waited here for
            # them, and each waited on the other (PostgreSQL broke the deadlock with a 503).
            conn.execute(
                select(SECRETS.c.secret_id).where(SECRETS.c.secret_id == secret_id).with_for_update()
            )
            for table in (STAGES, TAGS, VERSIONS):
                conn.execute(delete(table).where(table.c.secret_id == secret_id))
            conn.execute(delete(SECRETS).where(SECRETS.c.secret_id == secret_id))
            fingerprints.retire(conn, secret_id, time.time())  # its values are former from now on
        self.invalidate_all()

    # -- versions and stages -----------------------------------------------------------------------
    def read_stages(self, secret_id: str) -> dict[str, str]:
        def load() -> dict[str, str]:
            with self._engine.connect() as conn:
                return stages_in(conn, secret_id)

        return dict(self._stages.load(secret_id, load))

    def many_stages(self, secret_ids: list[str]) -> dict[str, dict[str, list[str]]]:
        """Each secret's labels by version (``{version_id: [label, ...]}``), in one query."""
        result: dict[str, dict[str, list[str]]] = {sid: {} for sid in secret_ids}
        if not secret_ids:
            return result
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(STAGES.c.secret_id, STAGES.c.version_id, STAGES.c.stage).where(
                    STAGES.c.secret_id.in_(secret_ids)
                )
            ).all()
        for sid, version_id, stage in rows:
            result[sid].setdefault(version_id, []).append(stage)
        return result

    def version(self, secret_id: str, version_id: str) -> VersionRecord | None:
        def load() -> VersionRecord | None:
            with self._engine.connect() as conn:
                return version_in(conn, secret_id, version_id)

        return self._versions.load((secret_id, version_id), load)

    def versions(self, secret_id: str) -> list[VersionRecord]:
        """Every version of the secret, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(VERSIONS).where(VERSIONS.c.secret_id == secret_id).order_by(VERSIONS.c.created_at)
            ).all()
        return [VersionRecord.from_row(r) for r in rows]

    def add_version(
        self, secret_id: str, version_id: str, sealed: SealedValue, relabel: Relabel, now: float
    ) -> dict[str, str] | None:
        """Store a new version and move labels (``relabel``) in one transaction, then drop the oldest
        deprecated versions beyond 100; returns the labels after. None: a concurrent request wrote a
        version with this id first (the caller decides whether that is the same request)."""
        try:
            with self._engine.begin() as conn:
                lock_secret(conn, secret_id, now)
                before = stages_in(conn, secret_id)
                after = relabel(before)
                insert_version(conn, secret_id, version_id, sealed, version_time(conn, secret_id, now))
                write_stages(conn, secret_id, before, after)
                prune_deprecated(conn, secret_id, now)
        except IntegrityError:
            # The caller looks at that version next: this process may have cached "no such version"
            # just before the other request wrote it (a retried PutSecretValue racing its first try
            # was refused as a different request).
            self._versions.invalidate((secret_id, version_id))
            return None
        return after

    def fill_placeholder(
        self, secret_id: str, version_id: str, sealed: SealedValue, relabel: Relabel, now: float
    ) -> dict[str, str]:
        """Give a rotation's version without a value (see PLACEHOLDER) its value and move labels, in one
        transaction; returns the labels after. If another request put a value first, raises
        ResourceExistsException and nothing is written."""
        with self._engine.begin() as conn:
            lock_secret(conn, secret_id, now)
            created_at = version_time(conn, secret_id, now)
            filled = conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.secret_id == secret_id)
                .where(VERSIONS.c.version_id == version_id)
                .where(VERSIONS.c.value_kind == PLACEHOLDER)
                .values(
                    created_at=created_at,
                    value_kind=sealed.kind,
                    kms_key_arn=sealed.kms_key_arn,
                    encrypted_data_key=sealed.encrypted_data_key,
                    encrypted_value=sealed.encrypted_value,
                )
            )
            if filled.rowcount != 1:  # another request put a value first
                raise errors.version_exists()
            fingerprints.add_secret_version(conn, secret_id, version_id, sealed.fingerprints, created_at)
            before = stages_in(conn, secret_id)
            after = relabel(before)
            write_stages(conn, secret_id, before, after)
        self.invalidate_all()
        return after

    def relabel(self, secret_id: str, relabel: Relabel, now: float) -> None:
        """Move the secret's labels (UpdateSecretVersionStage) in one transaction, then drop the oldest
        deprecated versions beyond 100."""
        with self._engine.begin() as conn:
            lock_secret(conn, secret_id, now)
            before = stages_in(conn, secret_id)
            after = relabel(before)
            write_stages(conn, secret_id, before, after)
            prune_deprecated(conn, secret_id, now)

    def reseal(self, secret_id: str, version_id: str, sealed: SealedValue) -> None:
        """Replace a version's value with the same value sealed under another key."""
        with self._engine.begin() as conn:
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.secret_id == secret_id)
                .where(VERSIONS.c.version_id == version_id)
                .values(
                    kms_key_arn=sealed.kms_key_arn,
                    encrypted_data_key=sealed.encrypted_data_key,
                    encrypted_value=sealed.encrypted_value,
                )
            )

    def lock(self, conn: Connection, secret_id: str, now: float) -> None:
        """Lock the secret's row inside the caller's transaction, as every write to its versions does
        (``tables.lock_secret``: ResourceNotFoundException if it is gone)."""
        lock_secret(conn, secret_id, now)

    def add_placeholder(self, conn: Connection, secret_id: str, version_id: str, now: float) -> None:
        """Give a rotation's token its version (no value: see PLACEHOLDER) unless it has one, and
        move AWSPENDING to it, inside the rotation engine's transaction (which also queues the run).
        The caller commits, then clears the cache. A token naming a version that has a value is
        refused (InvalidRequestException, rolling the transaction back): a rotation's version is a new
        one, and AWSPENDING on an old value would make the rotation's finishSecret restore it."""
        existing = version_in(conn, secret_id, version_id)
        if existing is not None and not existing.placeholder:
            raise errors.invalid_request(
                f"You can't use ClientRequestToken {version_id} because that value is already in use "
                "for a version of the secret. A rotation creates a new version."
            )
        if existing is None:
            insert_version(conn, secret_id, version_id, NOTHING, now)
        before = stages_in(conn, secret_id)
        write_stages(conn, secret_id, before, {**before, "AWSPENDING": version_id})

    # -- tags ----------------------------------------------------------------------------------------
    def tags(self, secret_id: str) -> list[dict[str, str]] | None:
        """The secret's tags in first-added order; None if it never had a tag (AWS then leaves Tags
        out, while a secret whose tags were all removed has an empty list: schema sm_secrets.tag_list)."""

        def load() -> list[dict[str, str]] | None:
            with self._engine.connect() as conn:
                return tag_list_of(conn, secret_id)

        tags = self._tags.load(secret_id, load)
        return None if tags is None else [dict(t) for t in tags]

    def many_tags(self, records: list[SecretRecord]) -> dict[str, list[dict[str, str]] | None]:
        """Each secret's tags (None: never tagged, as the record's tag_list says), in one query for the
        secrets that have a tag list and none when no secret has."""
        result: dict[str, list[dict[str, str]] | None] = {r.secret_id: None for r in records}
        tagged = [r.secret_id for r in records if r.tag_list]
        if tagged:
            with self._engine.connect() as conn:
                result.update(tags_of_many(conn, tagged))
        return result

    def tag(self, secret_id: str, tags: list[dict[str, str]], now: float) -> None:
        """Add or overwrite tags; more than MAX_TAGS in all raises InvalidRequestException and writes
        nothing."""
        with self._engine.begin() as conn:
            # the row update first: concurrent taggers of one secret wait for each other
            lock_secret(conn, secret_id, now)
            write_tags(conn, secret_id, tags)

    def untag(self, secret_id: str, keys: list[str], now: float) -> None:
        """Remove the tags ``keys``; a secret that had tags keeps an (empty) tag list. Any number of keys
        (UntagResource's have no maximum), in one transaction of bounded statements."""
        with self._engine.begin() as conn:
            lock_secret(conn, secret_id, now)
            for chunk in in_chunks(keys):
                conn.execute(
                    delete(TAGS).where(TAGS.c.secret_id == secret_id).where(TAGS.c.tag_key.in_(chunk))
                )

    # -- replicas ------------------------------------------------------------------------------------
    def mirror(
        self,
        replica_id: str,
        *,
        drop: set[str],
        add: dict[str, tuple[float, SealedValue]],
        stages: dict[str, str],
        tags: list[dict[str, str]] | None,
        fields: dict[str, Any],
    ) -> None:
        """Make a replica mirror its primary, in one transaction: drop the versions ``drop``, add the
        versions ``add`` (id → (created at, value sealed for the replica)), replace its labels and
        tags with the primary's (None: the primary never had a tag), and copy the primary's ``fields``."""
        with self._engine.begin() as conn:
            for version_id in drop:
                delete_version(conn, replica_id, version_id)
            for version_id, (created_at, sealed) in add.items():
                insert_version(conn, replica_id, version_id, sealed, created_at)
            conn.execute(delete(STAGES).where(STAGES.c.secret_id == replica_id))
            for stage, version_id in stages.items():
                conn.execute(insert(STAGES).values(secret_id=replica_id, stage=stage, version_id=version_id))
            conn.execute(delete(TAGS).where(TAGS.c.secret_id == replica_id))
            for position, tag in enumerate(tags or [], 1):
                conn.execute(
                    insert(TAGS).values(
                        secret_id=replica_id, tag_key=tag["Key"], tag_value=tag["Value"], position=position
                    )
                )
            conn.execute(
                update(SECRETS)
                .where(SECRETS.c.secret_id == replica_id)
                .values(**fields, tag_list=tags is not None)
            )
