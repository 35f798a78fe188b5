"""Access-key lookup for signature verification.

Secrets are stored sealed by the barrier and opened on demand; opened secrets are cached briefly per
process so the hot path does not hit the database, and short enough that a deactivated key stops
working across every node within seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from khoa.auth.principal import Principal
from khoa.bootstrap import access_key_binding
from khoa.crypto.barrier import Barrier
from khoa.storage import schema

_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Credential:
    secret: str
    principal: Principal


class CredentialStore:
    def __init__(self, engine: Engine, barrier: Barrier) -> None:
        self._engine = engine
        self._barrier = barrier
        self._cache: dict[str, tuple[float, Credential]] = {}

    def lookup(self, access_key_id: str) -> Credential | None:
        cached = self._cache.get(access_key_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        credential = self._load(access_key_id)
        if credential is None:
            self._cache.pop(access_key_id, None)
            return None
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[access_key_id] = (now + _CACHE_SECONDS, credential)
        return credential

    def _load(self, access_key_id: str) -> Credential | None:
        table = schema.access_keys
        with self._engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.access_key_id == access_key_id)).first()
        if row is None or row.status != "Active":
            return None
        secret = self._barrier.open(row.secret_sealed, access_key_binding(access_key_id)).decode()
        principal = Principal.account_root(row.account_id, access_key_id)
        return Credential(secret=secret, principal=principal)

    def clear(self) -> None:
        self._cache.clear()
