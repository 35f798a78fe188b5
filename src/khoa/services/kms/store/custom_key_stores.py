"""Custom key stores (type EXTERNAL_KEY_STORE) and the external key behind each of their KMS keys.

The proxy's SigV4 secret access key is sealed by the barrier, bound to the store id; it is opened
only to sign requests to the proxy and never returned by any read.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.crypto.barrier import Barrier
from khoa.storage import schema

_STORES = schema.kms_custom_key_stores
_XKS_KEYS = schema.kms_xks_keys


def secret_binding(store_id: str) -> str:
    return f"kms-custom-key-store:{store_id}"


@dataclass(frozen=True)
class CustomKeyStoreRecord:
    store_id: str
    account_id: str
    region: str
    name: str
    store_type: str
    connection_state: str
    connection_error_code: str | None
    endpoint: str
    uri_path: str
    connectivity: str
    access_key_id: str
    secret_sealed: bytes
    created_at: float


@dataclass(frozen=True)
class XksKeyLink:
    key_id: str
    store_id: str
    xks_key_id: str


class NameInUse(Exception):
    """Another store of the account and region has that name."""


class ExternalKeyInUse(Exception):
    """Another KMS key of the store is backed by that external key."""


class StoreQuotaExceeded(Exception):
    """The account already has as many custom key stores in the region as its quota allows."""


class CustomKeyStoreStore:
    def __init__(self, engine: Engine, barrier: Barrier) -> None:
        self._engine = engine
        self._barrier = barrier

    def seal_secret(self, store_id: str, secret: str) -> bytes:
        return self._barrier.seal(secret.encode(), secret_binding(store_id))

    def open_secret(self, record: CustomKeyStoreRecord) -> str:
        return self._barrier.open(record.secret_sealed, secret_binding(record.store_id)).decode()

    def insert(self, record: CustomKeyStoreRecord, limit: int | None = None) -> None:
        """Store a new store; NameInUse for a name the account's region already has. With ``limit``,
        a store that would give the account more than ``limit`` stores in the region raises
        StoreQuotaExceeded: counted after the insert, inside its transaction, with the account's row
        locked (PostgreSQL; on SQLite the insert already holds the single write lock), so concurrent
        creations cannot both fit."""
        try:
            with self._engine.begin() as conn:
                if limit is not None:
                    accounts = schema.accounts
                    conn.execute(
                        select(accounts.c.account_id)
                        .where(accounts.c.account_id == record.account_id)
                        .with_for_update()
                    )
                conn.execute(insert(_STORES).values(**record.__dict__))
                if limit is not None and _count(conn, record.account_id, record.region) > limit:
                    raise StoreQuotaExceeded
        except IntegrityError:
            raise NameInUse from None

    def count(self, account_id: str, region: str) -> int:
        """How many custom key stores the account has in the region."""
        with self._engine.connect() as conn:
            return _count(conn, account_id, region)

    def get(self, account_id: str, region: str, store_id: str) -> CustomKeyStoreRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_STORES)
                .where(_STORES.c.store_id == store_id)
                .where(_STORES.c.account_id == account_id)
                .where(_STORES.c.region == region)
            ).first()
        return CustomKeyStoreRecord(**row._mapping) if row is not None else None

    def by_name(self, account_id: str, region: str, name: str) -> CustomKeyStoreRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_STORES)
                .where(_STORES.c.name == name)
                .where(_STORES.c.account_id == account_id)
                .where(_STORES.c.region == region)
            ).first()
        return CustomKeyStoreRecord(**row._mapping) if row is not None else None

    def page(self, account_id: str, region: str, limit: int, offset: int) -> list[CustomKeyStoreRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_STORES)
                .where(_STORES.c.account_id == account_id)
                .where(_STORES.c.region == region)
                .order_by(_STORES.c.created_at, _STORES.c.store_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [CustomKeyStoreRecord(**r._mapping) for r in rows]

    def update(self, store_id: str, **values: object) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(update(_STORES).where(_STORES.c.store_id == store_id).values(**values))
        except IntegrityError:
            raise NameInUse from None

    def endpoint_in_use(self, account_id: str, region: str, endpoint: str, path: str, but: str = "") -> bool:
        """Whether another store of the account and region uses this proxy endpoint and path."""
        with self._engine.connect() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(_STORES)
                .where(_STORES.c.account_id == account_id)
                .where(_STORES.c.region == region)
                .where(_STORES.c.endpoint == endpoint)
                .where(_STORES.c.uri_path == path)
                .where(_STORES.c.store_id != but)
            ).scalar_one()
        return bool(count)

    def delete(self, store_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(_STORES).where(_STORES.c.store_id == store_id))

    # -- the KMS keys of a store ------------------------------------------------------------------
    def link(self, key_id: str, store_id: str, xks_key_id: str) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(_XKS_KEYS).values(key_id=key_id, store_id=store_id, xks_key_id=xks_key_id)
                )
        except IntegrityError:
            raise ExternalKeyInUse from None

    def external_key_in_use(self, store_id: str, xks_key_id: str) -> bool:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_XKS_KEYS.c.key_id)
                .where(_XKS_KEYS.c.store_id == store_id)
                .where(_XKS_KEYS.c.xks_key_id == xks_key_id)
            ).first()
        return row is not None

    def link_of(self, key_id: str) -> XksKeyLink | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_XKS_KEYS).where(_XKS_KEYS.c.key_id == key_id)).first()
        return XksKeyLink(**row._mapping) if row is not None else None

    def key_count(self, store_id: str) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(_XKS_KEYS).where(_XKS_KEYS.c.store_id == store_id)
                ).scalar_one()
            )


def _count(conn: Connection, account_id: str, region: str) -> int:
    query = (
        select(func.count())
        .select_from(_STORES)
        .where(_STORES.c.account_id == account_id)
        .where(_STORES.c.region == region)
    )
    return int(conn.execute(query).scalar_one())
