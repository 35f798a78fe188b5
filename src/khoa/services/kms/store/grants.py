"""KMS grants as stored: one row each, operations and constraints as the JSON CreateGrant wrote.

Listings join the key so each entry can name its key's ARN (region and owning account); the lookups
authorisation makes (a caller's grants on a key, one grant by id) read the grant row alone. A caller's
grants on a key are found through the (key, grantee) index, only those listing the operation asked
about.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, delete, func, insert, select

from khoa.storage import schema

_GRANTS = schema.kms_grants
_KEYS = schema.kms_keys


def _with_key_region() -> Select[Any]:
    return select(_GRANTS, _KEYS.c.region, _KEYS.c.account_id.label("key_account")).join(
        _KEYS, _KEYS.c.key_id == _GRANTS.c.key_id
    )


class GrantQuotaExceeded(Exception):
    """The key already has as many grants as its quota allows (nothing was stored)."""


class _SameGrant(Exception):
    """A grant of the same Name and parameters was stored first (rolls the new one back)."""

    def __init__(self, grant_id: str) -> None:
        super().__init__(grant_id)
        self.grant_id = grant_id


def _equal(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


class GrantStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def named(self, key_id: str, name: str) -> list[Row[Any]]:
        """The key's grants created with this name (a name can label several grants)."""
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_GRANTS).where(_GRANTS.c.key_id == key_id).where(_GRANTS.c.name == name)
                ).all()
            )

    def add(
        self,
        *,
        grant_id: str,
        key_id: str,
        account_id: str,
        name: str | None,
        grantee: str,
        retiring: str | None,
        operations: str,
        constraints: str | None,
        issuing_account: str,
        created_at: float,
        limit: int | None = None,
    ) -> str:
        """Store a new grant (``operations`` and ``constraints`` already serialised as JSON); returns
        the id of the grant that holds. With ``limit``, a grant that would give the key more than
        ``limit`` grants is refused with GrantQuotaExceeded: counted after the insert, inside its
        transaction, with the key's row locked (PostgreSQL; on SQLite the insert already holds the
        single write lock), so concurrent creations cannot both fit.

        With a ``name``, a grant of the key with the same name, grantee, retiring principal,
        operations and constraints stored before is the one that holds (AWS: the Name makes
        CreateGrant retries idempotent): looked for after the insert, under the same locks, so of
        concurrent retries one grant is stored and every one of them answers with its id."""
        try:
            with self._engine.begin() as conn:
                if limit is not None or name is not None:
                    conn.execute(select(_KEYS.c.key_id).where(_KEYS.c.key_id == key_id).with_for_update())
                conn.execute(
                    insert(_GRANTS).values(
                        grant_id=grant_id,
                        key_id=key_id,
                        account_id=account_id,
                        name=name,
                        grantee_principal=grantee,
                        retiring_principal=retiring,
                        operations=operations,
                        constraints=constraints,
                        issuing_account=issuing_account,
                        created_at=created_at,
                    )
                )
                if name is not None:
                    same = conn.execute(
                        select(_GRANTS.c.grant_id)
                        .where(_GRANTS.c.key_id == key_id)
                        .where(_GRANTS.c.name == name)
                        .where(_GRANTS.c.grant_id != grant_id)
                        .where(_GRANTS.c.grantee_principal == grantee)
                        .where(_equal(_GRANTS.c.retiring_principal, retiring))
                        .where(_GRANTS.c.operations == operations)
                        .where(_equal(_GRANTS.c.constraints, constraints))
                        .order_by(_GRANTS.c.created_at, _GRANTS.c.grant_id)
                        .limit(1)
                    ).scalar()
                    if same is not None:
                        raise _SameGrant(same)
                if limit is not None and self._count(conn, key_id) > limit:
                    raise GrantQuotaExceeded
        except _SameGrant as earlier:
            return earlier.grant_id
        return grant_id

    @staticmethod
    def _count(conn: Connection, key_id: str) -> int:
        query = select(func.count()).select_from(_GRANTS).where(_GRANTS.c.key_id == key_id)
        return int(conn.execute(query).scalar_one())

    def find(self, grant_id: str, key_id: str | None = None) -> Row[Any] | None:
        """One grant by id (on ``key_id`` only, when given)."""
        query = select(_GRANTS).where(_GRANTS.c.grant_id == grant_id)
        if key_id is not None:
            query = query.where(_GRANTS.c.key_id == key_id)
        with self._engine.connect() as conn:
            return conn.execute(query).first()

    def held_by(
        self, key_id: str, grantees: list[str], operation: str, limit: int | None = None
    ) -> list[Row[Any]]:
        """The key's grants whose grantee principal is one of ``grantees`` and whose operations list
        ``operation`` (up to ``limit`` of them, when given). Only what authorisation reads.

        The operations column is the JSON list CreateGrant wrote, so a listed operation appears in it
        quoted; a row the pattern misses lists no such operation (or cannot be read, and would allow
        nothing anyway). Operation names hold no LIKE wildcards."""
        query = (
            select(
                _GRANTS.c.grant_id,
                _GRANTS.c.key_id,
                _GRANTS.c.grantee_principal,
                _GRANTS.c.retiring_principal,
                _GRANTS.c.operations,
                _GRANTS.c.constraints,
            )
            .where(_GRANTS.c.key_id == key_id)
            .where(_GRANTS.c.grantee_principal.in_(grantees))
            .where(_GRANTS.c.operations.like(f'%"{operation}"%'))
        )
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return list(conn.execute(query).all())

    def page_of_key(
        self, key_id: str, grant_id: str | None, grantee: str | None, limit: int, offset: int
    ) -> list[Row[Any]]:
        """Up to ``limit`` of the key's grants (only ``grant_id``, only ``grantee``'s, when given), oldest
        first from ``offset``; each row also carries ``region`` and ``key_account``."""
        query = _with_key_region().where(_GRANTS.c.key_id == key_id)
        if grant_id:
            query = query.where(_GRANTS.c.grant_id == grant_id)
        if grantee:
            query = query.where(_GRANTS.c.grantee_principal == grantee)
        return self._page(query, limit, offset)

    def page_retirable(
        self, region: str, retiring: str, key_account: str | None, limit: int, offset: int
    ) -> list[Row[Any]]:
        """Up to ``limit`` grants on keys in ``region`` naming ``retiring`` as retiring principal (only
        on keys of ``key_account``, when given), oldest first from ``offset``."""
        query = (
            _with_key_region().where(_KEYS.c.region == region).where(_GRANTS.c.retiring_principal == retiring)
        )
        if key_account is not None:
            query = query.where(_KEYS.c.account_id == key_account)
        return self._page(query, limit, offset)

    def _page(self, query: Select[Any], limit: int, offset: int) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    query.order_by(_GRANTS.c.created_at, _GRANTS.c.grant_id).limit(limit).offset(offset)
                ).all()
            )

    def remove(self, key_id: str, grant_id: str) -> bool:
        """Retire or revoke one grant of the key; False when the key has no such grant."""
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(_GRANTS).where(_GRANTS.c.key_id == key_id).where(_GRANTS.c.grant_id == grant_id)
            )
        return bool(result.rowcount)
