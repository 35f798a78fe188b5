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
from khoa.affinity import HeavyGate
from khoa.crypto import keymaterial
from khoa.crypto.barrier import Barrier
from khoa.services.kms.store import KmsStore
from khoa.services.kms.xks import XksClient
from khoa.services.kms.xks_endpoints import EndpointPolicy, parse_networks

UNGATED = HeavyGate(None, 1)  # no lock files: key generation waits for nothing (holds no state)


@dataclass(frozen=True)
class KmsBackend:
    """KMS's collaborators (one per process, shared by the service, its jobs and ``internal``)."""

    barrier: Barrier
    store: KmsStore
    authorizer: Authorizer
    xks: XksClient = field(default_factory=XksClient)
    """The client of external key stores' XKS proxies (its listeners feed the metrics)."""
    cpu_gate: HeavyGate = UNGATED
    """Where RSA key generation takes its turn with the node's other key generation (ungated unless
    the composition root gives the node's gate)."""

    @classmethod
    def create(
        cls,
        engine: Engine,
        barrier: Barrier,
        authorizer: Authorizer,
        cache_seconds: float,
        cpu_gate: HeavyGate | None = None,
        xks_networks: str = "",
    ) -> KmsBackend:
        """The collaborators over ``engine``, with a store whose caches live ``cache_seconds``;
        ``xks_networks``: the non-public networks XKS proxies may be in (KHOA_XKS_PROXY_NETWORKS)."""
        store = KmsStore(engine, barrier, cache_seconds)
        xks = XksClient(endpoints=EndpointPolicy(parse_networks(xks_networks)))
        return cls(barrier, store, authorizer, xks, cpu_gate=cpu_gate or UNGATED)

    def generate_rsa(self, bits: int) -> bytes:
        """A new RSA private key (PKCS#8 DER), generated in a slot of the node's gate: RSA-4096 takes
        a CPU for up to seconds, and with every CPU generating keys fast calls fell to half their
        rate (khoa.affinity.HeavyGate)."""
        return self.cpu_gate.run(lambda: keymaterial.generate_rsa(bits))
