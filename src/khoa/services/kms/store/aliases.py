"""KMS aliases: friendly names for keys, per account and region, and the cached name → key lookup."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.storage import schema

_ALIASES = schema.kms_aliases


class AliasQuotaExceeded(Exception):
    """The key already has as many aliases as its quota allows (nothing was changed)."""


@dataclass(frozen=True)
class AliasRecord:
    alias_name: str
    target_key_id: str
    created_at: float
    updated_at: float


class AliasStore:
    """Aliases over ``engine``; ``targets`` is the key store's alias cache (see ``KeyStore``), read
    here and cleared whole after every alias write. The names of each key's aliases
    (kms:ResourceAliases, read for every call an IAM principal makes on a key) are cached
    ``cache_seconds`` too, and cleared with it."""

    def __init__(
        self,
        engine: Engine,
        targets: TTLCache[tuple[str, str, str], str | None],
        cache_seconds: float = METADATA_SECONDS,
    ) -> None:
        self._engine = engine
        self._targets = targets
        self._names: TTLCache[str, tuple[str, ...]] = TTLCache(cache_seconds)

    def names_of(self, key_id: str) -> tuple[str, ...]:
        """The names of the aliases pointing at the key, sorted (key ids are globally unique, and an
        alias only ever points at a key of its own account and Region)."""
        cached = self._names.get(key_id)
        if cached is not MISSING:
            return cached
        with self._engine.connect() as conn:
            names = tuple(
                conn.execute(
                    select(_ALIASES.c.alias_name)
                    .where(_ALIASES.c.target_key_id == key_id)
                    .order_by(_ALIASES.c.alias_name)
                ).scalars()
            )
        self._names.put(key_id, names)
        return names

    def clear_cache(self) -> None:
        self._targets.clear()
        self._names.clear()

    def target(self, account_id: str, region: str, alias_name: str) -> str | None:
        """The key id the alias points at (None: no such alias), from the cache or one query."""
        cache_key = (account_id, region, alias_name)
        cached = self._targets.get(cache_key)
        if cached is not MISSING:
            return cached
        with self._engine.connect() as conn:
            target: str | None = conn.execute(
                select(_ALIASES.c.target_key_id)
                .where(_ALIASES.c.account_id == account_id)
                .where(_ALIASES.c.region == region)
                .where(_ALIASES.c.alias_name == alias_name)
            ).scalar()
        self._targets.put(cache_key, target)
        return target

    def create(
        self, account_id: str, region: str, alias_name: str, key_id: str, now: float, limit: int | None = None
    ) -> bool:
        """Add the alias; False when the name is already taken (the primary key decides, so two
        concurrent creations cannot both succeed). With ``limit``, an alias that would give the key
        more than ``limit`` aliases raises AliasQuotaExceeded (see ``_check_quota``)."""
        try:
            with self._engine.begin() as conn:
                if limit is not None:
                    _lock_key(conn, key_id)
                conn.execute(
                    insert(_ALIASES).values(
                        account_id=account_id,
                        region=region,
                        alias_name=alias_name,
                        target_key_id=key_id,
                        created_at=now,
                        updated_at=now,
                    )
                )
                _check_quota(conn, key_id, limit)
        except IntegrityError:
            return False
        finally:
            self.clear_cache()
        return True

    def retarget(
        self, account_id: str, region: str, alias_name: str, key_id: str, now: float, limit: int | None = None
    ) -> None:
        """Point an existing alias at another key (nothing happens if it was deleted meanwhile). With
        ``limit``, as ``create``."""
        try:
            with self._engine.begin() as conn:
                if limit is not None:
                    _lock_key(conn, key_id)
                conn.execute(
                    update(_ALIASES)
                    .where(_ALIASES.c.account_id == account_id)
                    .where(_ALIASES.c.region == region)
                    .where(_ALIASES.c.alias_name == alias_name)
                    .values(target_key_id=key_id, updated_at=now)
                )
                _check_quota(conn, key_id, limit)
        finally:
            self.clear_cache()

    def remove(self, account_id: str, region: str, alias_name: str) -> bool:
        """Remove the alias; False when there was none."""
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(_ALIASES)
                .where(_ALIASES.c.account_id == account_id)
                .where(_ALIASES.c.region == region)
                .where(_ALIASES.c.alias_name == alias_name)
            )
        self.clear_cache()
        return bool(result.rowcount)

    def page(
        self, account_id: str, region: str, key_id: str | None, limit: int, offset: int
    ) -> list[AliasRecord]:
        """Up to ``limit`` of the account's aliases in the region by name from ``offset`` (only those
        of ``key_id`` when given)."""
        query = select(_ALIASES).where(_ALIASES.c.account_id == account_id).where(_ALIASES.c.region == region)
        if key_id is not None:
            query = query.where(_ALIASES.c.target_key_id == key_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(_ALIASES.c.alias_name).limit(limit).offset(offset)).all()
        return [AliasRecord(r.alias_name, r.target_key_id, r.created_at, r.updated_at) for r in rows]

    def count_before(self, account_id: str, region: str, alias_names: list[str]) -> dict[str, int]:
        """For each of ``alias_names``, how many of the account's aliases in the region sort before it
        (in the database's own order, the order ``page`` lists them in), and whether it exists: a name
        that exists maps to -1."""
        if not alias_names:
            return {}
        column = _ALIASES.c.alias_name
        query = select(
            *[func.coalesce(func.sum(case((column < name, 1), else_=0)), 0) for name in alias_names],
            *[func.coalesce(func.sum(case((column == name, 1), else_=0)), 0) for name in alias_names],
        ).where(_ALIASES.c.account_id == account_id, _ALIASES.c.region == region)
        with self._engine.connect() as conn:
            row = conn.execute(query).one()
        count = len(alias_names)
        return {name: (-1 if row[count + i] else int(row[i])) for i, name in enumerate(alias_names)}


def _lock_key(conn: Connection, key_id: str) -> None:
    """Serialise alias changes onto one key (PostgreSQL; a no-op on SQLite, where the transaction's
    first write already holds the database's single write lock)."""
    keys = schema.kms_keys
    conn.execute(select(keys.c.key_id).where(keys.c.key_id == key_id).with_for_update())


def _check_quota(conn: Connection, key_id: str, limit: int | None) -> None:
    """AliasQuotaExceeded (rolling the change back) when the key now has more than ``limit`` aliases:
    counted after the write, inside its transaction, so concurrent changes cannot both fit."""
    if limit is None:
        return
    count = conn.execute(
        select(func.count()).select_from(_ALIASES).where(_ALIASES.c.target_key_id == key_id)
    ).scalar_one()
    if count > limit:
        raise AliasQuotaExceeded
