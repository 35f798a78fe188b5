"""What KMS is given to work with: its collaborators, passed once to ``build_service``.

KMS handlers reach nothing else: the store (keys and their sealed material with the per-process
caches in front of them, aliases, grants, tags, import parameters, and the audit events
GetKeyLastUsage reads), the barrier that seals import wrapping keys, and the authoriser that
evaluates key policies, IAM policies and grants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from khoa.access.authorize import Authorizer
from khoa.crypto.barrier import Barrier
from khoa.services.kms.store import KmsStore
from khoa.services.kms.xks import XksClient


@dataclass(frozen=True)
class KmsBackend:
    """KMS's collaborators (one per process, shared by the service, its jobs and ``internal``)."""

    barrier: Barrier
    store: KmsStore
    authorizer: Authorizer
    xks: XksClient = field(default_factory=XksClient)
    """The client of external key stores' XKS proxies (its listeners feed the metrics)."""

    @classmethod
    def create(
        cls, engine: Engine, barrier: Barrier, authorizer: Authorizer, cache_seconds: float
    ) -> KmsBackend:
        """The collaborators over ``engine``, with a store whose caches live ``cache_seconds``."""
        return cls(barrier, KmsStore(engine, barrier, cache_seconds), authorizer)
