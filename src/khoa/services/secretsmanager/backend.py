"""Secrets Manager's collaborators: everything its handlers may reach, given once to ``build_service``.

Handlers receive a :class:`SecretsBackend` as their first argument instead of reaching the whole
application through the request context, so what Secrets Manager depends on is listed here and a unit
test can build the service from a database, a barrier and an authoriser (tests/support/handlers.py).
The rotation engine is reached only through :class:`RotationControl`: it is built before this
service (it needs the secret store, not the service) and its runner stays outside the package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from khoa.access.authorize import Authorizer
from khoa.crypto.fingerprint import Fingerprinter
from khoa.services.secretsmanager.store import SecretStore
from khoa.services.secretsmanager.values import EnvelopeKeys


class RotationControl(Protocol):
    """What RotateSecret and CancelRotateSecret ask of the rotation engine (khoa.secret_rotation.engine)."""

    def start(
        self, secret_id: str, token: str, now: float, configure: Mapping[str, Any] | None = None
    ) -> bool:
        """Queue a rotation with version ``token``, writing the secret's columns ``configure`` in the
        same transaction; False, with nothing written, if one is already in progress (of concurrent
        starts exactly one succeeds)."""
        ...

    def cancel(self, secret_id: str) -> None:
        """Forget the secret's queued or running rotation."""
        ...

    def in_progress(self, secret_id: str) -> str | None:
        """The token of the secret's rotation in progress, if any."""
        ...

    def has_function(self, arn: str) -> bool:
        """Whether a rotation function is registered under ``arn`` (RotateSecret names one)."""
        ...


@dataclass(frozen=True)
class SecretsBackend:
    """Secrets Manager's per-process collaborators.

    ``store`` is where every statement of Secrets Manager's own tables runs; ``engine`` is given only
    for the change events of khoa.changes, which read and write through it (publishing.py). ``keys`` is
    KMS as Secrets Manager uses it (envelope encryption of every version); ``poke_jobs``
    wakes the background job runner so a rotation asked for now starts without waiting for its next
    pass; ``regions`` are the regions this installation serves (KHOA_REGIONS), the only ones a
    secret may be replicated to.
    """

    engine: Engine
    store: SecretStore
    keys: EnvelopeKeys
    authorizer: Authorizer
    rotation: RotationControl
    poke_jobs: Callable[[], None]
    regions: tuple[str, ...]
    # Fingerprints every value written, for leak detection (khoa-leaks); None: no fingerprints.
    fingerprinter: Fingerprinter | None = None
