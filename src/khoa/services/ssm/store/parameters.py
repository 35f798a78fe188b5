"""Parameters and their versions, with the per-process caches in front of the reads GetParameter makes."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, replace

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.crypto.fingerprint import Fingerprinter
from khoa.services.ssm import errors, names
from khoa.services.ssm.store.labels import LabelStore
from khoa.services.ssm.store.listing import ListingStore
from khoa.services.ssm.store.records import (
    LABELS,
    PARAMS,
    TAGS,
    VERSIONS,
    NewVersion,
    ParameterRow,
    VersionRow,
    lock,
)
from khoa.services.ssm.store.tags import TagStore
from khoa.storage import fingerprints

MAX_VERSIONS = 100
# Parameters an account may keep in a Region, by tier (AWS's quotas: "Number of parameters per AWS
# account and AWS Region"). Counted as one is created, in the creating transaction.
MAX_PARAMETERS = {"Standard": 10_000, "Advanced": 100_000}


class ParameterStore:
    """All of Parameter Store's storage, over one database engine: parameters and versions here,
    ``labels``, ``tags`` and ``listing`` (the filtered pages) beside them.

    Reads of parameters and versions are cached for ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS,
    see khoa.cache); Parameter Store's writes clear the cache of this process before and after they run
    (see __init__.py), and deleting a parameter clears it too (the expiry job runs outside requests)."""

    def __init__(
        self,
        engine: Engine,
        cache_seconds: float = METADATA_SECONDS,
        fingerprinter: Fingerprinter | None = None,
    ) -> None:
        self._engine = engine
        # Fingerprints each SecureString version in its write's transaction (leak detection).
        self._fingerprinter = fingerprinter
        self._rows: TTLCache[tuple[str, str, str], ParameterRow | None] = TTLCache(cache_seconds)
        self._versions: TTLCache[tuple[str, int], VersionRow | None] = TTLCache(cache_seconds)
        self.labels = LabelStore(engine)
        self.tags = TagStore(engine, cache_seconds)
        self.listing = ListingStore(engine)

    def invalidate_all(self) -> None:
        self._rows.clear()
        self._versions.clear()
        self.tags.clear_cache()

    def get(self, account_id: str, region: str, name: str) -> ParameterRow | None:
        """The parameter called ``name`` (cached, a miss too)."""
        cached = self._rows.get((account_id, region, name))
        if cached is not MISSING:
            return cached
        with self._engine.connect() as conn:
            found = conn.execute(
                select(PARAMS.c.param_id, PARAMS.c.name, PARAMS.c.version, PARAMS.c.tier, PARAMS.c.policies)
                .where(PARAMS.c.account_id == account_id)
                .where(PARAMS.c.region == region)
                .where(PARAMS.c.name == name)
            ).first()
        row = None if found is None else ParameterRow(*found)
        self._rows.put((account_id, region, name), row)
        return row

    def version(self, param_id: str, version: int) -> VersionRow | None:
        """One version of a parameter (cached, a miss too)."""
        cached = self._versions.get((param_id, version))
        if cached is not MISSING:
            return cached
        with self._engine.connect() as conn:
            row = conn.execute(
                select(VERSIONS).where(VERSIONS.c.param_id == param_id).where(VERSIONS.c.version == version)
            ).first()
        result = None if row is None else VersionRow.from_row(row)
        self._versions.put((param_id, version), result)
        return result

    def versions(self, param_id: str) -> list[VersionRow]:
        """Every version the parameter keeps, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(VERSIONS).where(VERSIONS.c.param_id == param_id).order_by(VERSIONS.c.version)
            ).all()
        return [VersionRow.from_row(r) for r in rows]

    def create(
        self,
        account_id: str,
        region: str,
        name: str,
        first: NewVersion,
        expires_at: float | None,
        tags: dict[str, str],
        secure_value: str | None = None,
    ) -> int:
        """A new parameter with its first version and its tags, in one transaction; returns the version
        number (1). A parameter of that name created meanwhile raises ParameterAlreadyExists."""
        param_id = str(uuid.uuid4())
        try:
            with self._engine.begin() as conn:
                held = conn.execute(
                    select(func.count())
                    .select_from(PARAMS)
                    .where(PARAMS.c.account_id == account_id, PARAMS.c.region == region)
                    .where(PARAMS.c.tier == first.tier)
                ).scalar_one()
                if held >= MAX_PARAMETERS.get(first.tier, MAX_PARAMETERS["Standard"]):
                    raise errors.code(
                        "ParameterLimitExceeded",
                        f"You have exceeded the number of {first.tier.lower()} parameters for this AWS "
                        "account and Region. Delete one or more parameters and try again.",
                    )
                conn.execute(
                    insert(PARAMS).values(
                        param_id=param_id,
                        account_id=account_id,
                        region=region,
                        name=name,
                        parent_path=names.parent_path(name),
                        version=1,
                        tier=first.tier,
                        policies=first.policies,
                        expires_at=expires_at,
                    )
                )
                for tag_key, tag_value in tags.items():
                    conn.execute(insert(TAGS).values(param_id=param_id, tag_key=tag_key, tag_value=tag_value))
                conn.execute(insert(VERSIONS).values(param_id=param_id, version=1, **asdict(first)))
                self._fingerprint(
                    conn, account_id, region, param_id, name, 1, secure_value, first.modified_at
                )
        except IntegrityError:
            raise errors.already_exists() from None
        return 1

    def add_version(
        self,
        existing: ParameterRow,
        content: NewVersion,
        expires_at: float | None,
        secure_value: str | None = None,
    ) -> int:
        """The next version of ``existing``, in one transaction; returns its number.

        The parameter's row moves on only from the version ``existing`` was read at, so of two
        concurrent writers one gets TooManyUpdates rather than both writing the same version number
        (and a parameter deleted meanwhile is TooManyUpdates too). That update comes first: it is
        the parameter's lock (records.lock), so what is read next is current. The oldest version is
        then dropped if the parameter keeps ``MAX_VERSIONS`` already (ParameterMaxVersionLimitExceeded
        if a label is on it, one put there by a concurrent LabelParameterVersion included). A
        version is never dated before the one it follows (``_not_before``)."""
        version = existing.version + 1
        try:
            with self._engine.begin() as conn:
                result = conn.execute(
                    update(PARAMS)
                    .where(PARAMS.c.param_id == existing.param_id)
                    .where(PARAMS.c.version == existing.version)
                    .values(
                        version=version, tier=content.tier, policies=content.policies, expires_at=expires_at
                    )
                )
                if result.rowcount != 1:
                    raise errors.code(
                        "TooManyUpdates",
                        "There are concurrent updates for the resource that you are "
                        "trying to update. Please try again.",
                    )
                _make_room(conn, existing.param_id, existing.name)
                content = _not_before(conn, existing, content)
                conn.execute(
                    insert(VERSIONS).values(param_id=existing.param_id, version=version, **asdict(content))
                )
                # the version before stopped being the value GetParameter answers
                fingerprints.retire(conn, existing.param_id, content.modified_at, [str(existing.version)])
                self._fingerprint(
                    conn,
                    None,
                    None,
                    existing.param_id,
                    existing.name,
                    version,
                    secure_value,
                    content.modified_at,
                )
        except IntegrityError:
            raise errors.already_exists() from None
        return version

    def destroy(self, param_id: str) -> None:
        """Delete a parameter with its versions, labels and tags, and forget what this process cached.
        The parameter's lock is taken first, so a concurrent change to its versions or labels is
        wholly before or finds it gone."""
        with self._engine.begin() as conn:
            lock(conn, param_id)
            for table in (LABELS, TAGS, VERSIONS):
                conn.execute(delete(table).where(table.c.param_id == param_id))
            conn.execute(delete(PARAMS).where(PARAMS.c.param_id == param_id))
            fingerprints.retire(conn, param_id, time.time())  # its values are former from now on
        self.invalidate_all()

    def _fingerprint(
        self,
        conn: Connection,
        account_id: str | None,
        region: str | None,
        param_id: str,
        name: str,
        version: int,
        secure_value: str | None,
        now: float,
    ) -> None:
        """Record a SecureString version's leak fingerprint (khoa.storage.fingerprints); the
        parameter's account and Region are read from its row when not given."""
        if self._fingerprinter is None or secure_value is None:
            return
        if account_id is None or region is None:
            place = conn.execute(
                select(PARAMS.c.account_id, PARAMS.c.region).where(PARAMS.c.param_id == param_id)
            ).one()
            account_id, region = place.account_id, place.region
        arn = f"arn:aws:ssm:{region}:{account_id}:parameter/{name.lstrip('/')}"
        resource = fingerprints.Resource(
            account_id, region, fingerprints.PARAMETER, param_id, arn, version_id=str(version)
        )
        fingerprints.add(conn, resource, [(None, self._fingerprinter.digest(secure_value))], now)

    def expired(self, now: float) -> list[tuple[str, str]]:
        """``(param_id, name)`` of every parameter, in any account, whose Expiration policy is due."""
        with self._engine.connect() as conn:
            due = conn.execute(
                select(PARAMS.c.param_id, PARAMS.c.name)
                .where(PARAMS.c.expires_at.is_not(None))
                .where(PARAMS.c.expires_at <= now)
            ).all()
        return [(param_id, name) for param_id, name in due]


def _make_room(conn: Connection, param_id: str, name: str) -> None:
    """Drop the oldest version if the parameter keeps ``MAX_VERSIONS``, unless a label is on it."""
    versions = (
        conn.execute(
            select(VERSIONS.c.version).where(VERSIONS.c.param_id == param_id).order_by(VERSIONS.c.version)
        )
        .scalars()
        .all()
    )
    if len(versions) < MAX_VERSIONS:
        return
    oldest = versions[0]
    labelled = conn.execute(
        select(LABELS.c.label).where(LABELS.c.param_id == param_id).where(LABELS.c.version == oldest)
    ).first()
    if labelled is not None:
        raise errors.code(
            "ParameterMaxVersionLimitExceeded",
            f"You attempted to create a new version of {name} by calling the PutParameter API with "
            f"the overwrite flag. Version {oldest}, the oldest version, can't be deleted because it has a "
            "label associated with it. Move the label to another version of the parameter, and try "
            "again.",
        )
    conn.execute(delete(VERSIONS).where(VERSIONS.c.param_id == param_id).where(VERSIONS.c.version == oldest))


def _not_before(conn: Connection, existing: ParameterRow, content: NewVersion) -> NewVersion:
    """``content``, dated no earlier than the version it follows. A writer reads the clock before it
    reads the parameter, so of two racing PutParameter calls the one that commits second (the higher
    version) could otherwise carry the earlier LastModifiedDate."""
    previous = conn.execute(
        select(VERSIONS.c.modified_at).where(
            VERSIONS.c.param_id == existing.param_id, VERSIONS.c.version == existing.version
        )
    ).scalar()
    if previous is None or float(previous) <= content.modified_at:
        return content
    return replace(content, modified_at=float(previous))
