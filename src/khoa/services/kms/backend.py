"""What KMS is given to work with: its collaborators, passed once to ``build_service``.

KMS handlers reach nothing else: the key store (keys, their sealed material, and the per-process
caches in front of them), the database engine for the tables the key store does not cover (aliases,
grants, tags, import parameters, the audit events GetKeyLastUsage reads), the barrier that seals
import wrapping keys, and the authoriser that evaluates key policies, IAM policies and grants.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from khoa.access.authorize import Authorizer
from khoa.crypto.barrier import Barrier
from khoa.services.kms.store import KeyStore


@dataclass(frozen=True)
class KmsBackend:
    """KMS's collaborators (one per process, shared by the service, its jobs and ``internal``)."""

    engine: Engine
    barrier: Barrier
    keys: KeyStore
    authorizer: Authorizer

    @classmethod
    def create(
        cls, engine: Engine, barrier: Barrier, authorizer: Authorizer, cache_seconds: float
    ) -> KmsBackend:
        """The collaborators over ``engine``, with a key store whose caches live ``cache_seconds``."""
        return cls(engine, barrier, KeyStore(engine, barrier, cache_seconds), authorizer)
