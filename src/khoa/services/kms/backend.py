"""KMS's per-process state: the key store (with its material cache) and the database engine."""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.crypto.barrier import Barrier
from khoa.services.kms.store import KeyStore


class KmsBackend:
    def __init__(self, engine: Engine, barrier: Barrier, cache_seconds: float) -> None:
        self.engine = engine
        self.barrier = barrier
        self.keys = KeyStore(engine, barrier, cache_seconds)
