"""Secrets Manager's per-process state."""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.services.secretsmanager.store import SecretStore


class SecretsBackend:
    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self.store = SecretStore(engine, cache_seconds)
