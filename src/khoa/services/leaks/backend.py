"""What khoa-leaks' handlers, authorisation table and responses are given (by ``build_service``).

Leak detection reads every other service's values only through their fingerprints (``store``), and
acts on other services only through what is listed here: their own handlers (``services``: what a
response does, it does as those services do it, quarantining a key with IAM's UpdateAccessKey and
PutUserPolicy) and the rotation engine's control (``rotation``). Service packages may not import one
another (tests/unit/test_dependency_direction.py), so these come from the composition root.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine

from khoa.access.authorize import Authorizer
from khoa.audit.events import AuditEvent
from khoa.clock import Clock
from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter
from khoa.services.base import Service
from khoa.services.leaks.limits import RateLimiter
from khoa.services.leaks.store import LeakStore


class RotationControl(Protocol):
    """What a response asks of the rotation engine (khoa.secret_rotation.engine.RotationEngine)."""

    def start(self, secret_id: str, token: str, now: float) -> bool:
        """Queue a rotation with version ``token``; False if one is already in progress."""
        ...

    def cancel(self, secret_id: str) -> None:
        """Forget the secret's queued or running rotation."""
        ...

    def in_progress(self, secret_id: str) -> str | None:
        """The token of the secret's rotation in progress, if any."""
        ...

    def has_function(self, arn: str) -> bool:
        """Whether a rotation function is registered under ``arn``."""
        ...

    def emergency(self, secret_arn: str, now: datetime, timeout: float) -> dict[str, Any]:
        """Rotate now and make every earlier value stop working (khoa.secret_rotation.emergency).
        Returns {"VersionId": str, "Actions": [str], "Succeeded": bool, "Error": str}; never raises for a
        failed rotation (Succeeded False, Error one line, no value)."""
        ...


class AuditWriter(Protocol):
    """Where responses are recorded as AwsServiceEvents (khoa.audit.recorder.AuditRecorder)."""

    def write(self, events: list[AuditEvent]) -> None: ...


@dataclass(frozen=True)
class LeaksBackend:
    """khoa-leaks' per-process collaborators.

    ``store`` reads the fingerprint table (and the state of what each fingerprint is of);
    ``fingerprinter`` computes candidates' fingerprints with the installation's key; ``authorizer``
    authorises the calls; ``limiter`` is the per-identity rate limit. For responses (respond.py):
    ``services`` are this process's other services by :attr:`Service.name` (their handlers run without
    the pipeline's authorisation: a response acts as Khoa), ``rotation`` the rotation engine,
    ``poke_jobs`` wakes the job runner, ``audit`` records what was done, ``clock`` is Khoa's clock.
    """

    store: LeakStore
    fingerprinter: Fingerprinter
    authorizer: Authorizer
    services: Mapping[str, Service]
    rotation: RotationControl
    poke_jobs: Callable[[], None]
    audit: AuditWriter
    engine: Engine
    barrier: Barrier
    clock: Clock
    limiter: RateLimiter
