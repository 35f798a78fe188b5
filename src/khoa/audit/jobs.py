"""Background work as audit events, and the leader's sweep for calls whose outcome was lost.

Each resource a job deletes, rotates or expires on its own becomes one ``AwsServiceEvent`` (as AWS
records a key deleted at the end of its waiting period) naming the resource and its account. A job
returns only resource ids, so the owners of the due resources are read just before it runs (a deleted
row cannot be read afterwards). Events are written once the work is done; if the sink fails the
failure is counted (readiness turns 503) and logged, since the work cannot be undone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, select

from khoa.audit.events import AuditEvent, background
from khoa.audit.outcomes import LostOutcomeSweep, Writer, outcome_wait_seconds
from khoa.storage import schema

log = logging.getLogger("khoa.jobs")


class EventSink(Protocol):
    """What a job needs of the audit sink (:class:`khoa.audit.recorder.AuditRecorder`)."""

    def write(self, events: list[AuditEvent]) -> None: ...

    def note_failure(self) -> None: ...


@dataclass(frozen=True)
class JobAudit:
    """Where background jobs' events are recorded, and whom they name when a resource's owner
    could not be read before the job ran (its row was already gone): the default account and
    Region, as for calls in ``--dev`` mode."""

    engine: Engine
    sink: EventSink
    default_account_id: str
    default_region: str


@dataclass(frozen=True)
class Owned:
    """A due resource: the id its job returns, and where it lives."""

    resource_id: str
    account_id: str
    region: str
    arn: str


@dataclass(frozen=True)
class Due:
    """How to find the resources a job may act on, and how to name them in its events."""

    service: str
    resource_type: str
    detail: str  # the additionalEventData member naming the resource
    find: Callable[[Engine, float], list[Owned]]


def kms_keys(column: str) -> Due:
    """Keys whose ``column`` (deletion_date, next_rotation_at, valid_to) has come."""

    def find(engine: Engine, now: float) -> list[Owned]:
        t = schema.kms_keys
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.c.key_id, t.c.account_id, t.c.region).where(
                    t.c[column].is_not(None), t.c[column] <= now
                )
            ).all()
        return [Owned(k, a, r, f"arn:aws:kms:{r}:{a}:key/{k}") for k, a, r in rows]

    return Due("kms", "AWS::KMS::Key", "keyId", find)


def _secrets(engine: Engine, now: float) -> list[Owned]:
    t = schema.sm_secrets
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.arn, t.c.account_id, t.c.region).where(
                t.c.deletion_due_at.is_not(None), t.c.deletion_due_at <= now
            )
        ).all()
    return [Owned(arn, a, r, arn) for arn, a, r in rows]


def _parameters(engine: Engine, now: float) -> list[Owned]:
    t = schema.ssm_parameters
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.name, t.c.account_id, t.c.region).where(
                t.c.expires_at.is_not(None), t.c.expires_at <= now
            )
        ).all()
    return [Owned(n, a, r, f"arn:aws:ssm:{r}:{a}:parameter/{n.lstrip('/')}") for n, a, r in rows]


SECRETS = Due("secretsmanager", "AWS::SecretsManager::Secret", "secretId", _secrets)
PARAMETERS = Due("ssm", "AWS::SSM::Parameter", "name", _parameters)


def recorded(
    audit: JobAudit,
    event_name: str,
    due: Due,
    work: Callable[[float], list[str]],
    **details: Any,
) -> Callable[[datetime], None]:
    """A job that runs ``work`` and records one ``event_name`` event per resource it returns."""

    def job(now: datetime) -> None:
        owners: dict[str, list[Owned]] = {}
        for owned in due.find(audit.engine, now.timestamp()):
            owners.setdefault(owned.resource_id, []).append(owned)
        events: list[AuditEvent] = []
        for resource_id in work(now.timestamp()):
            candidates = owners.get(resource_id) or [
                Owned(resource_id, audit.default_account_id, audit.default_region, resource_id)
            ]
            owned = candidates.pop(0)
            log.info("background job %s %s (account %s)", event_name, owned.arn, owned.account_id)
            events.append(
                background(
                    service=due.service,
                    event_name=event_name,
                    account_id=owned.account_id,
                    region=owned.region,
                    now=now,
                    details={due.detail: resource_id, **details},
                    resources=[{"accountId": owned.account_id, "type": due.resource_type, "ARN": owned.arn}],
                )
            )
        if not events:
            return
        try:
            audit.sink.write(events)
        except Exception:
            audit.sink.note_failure()
            log.exception("could not record %d %s events", len(events), event_name)
            raise

    return job


def lost_outcomes(engine: Engine, writer: Writer, step_timeout_seconds: float) -> Callable[[datetime], int]:
    """The leader's job marking write calls whose outcome was lost as outcome unknown, every pass
    (:class:`khoa.audit.outcomes.LostOutcomeSweep`: this host's processes that are gone, and any
    call that waited past the bound for rotation steps of ``step_timeout_seconds``)."""
    return LostOutcomeSweep(engine, writer, outcome_wait_seconds(step_timeout_seconds)).run
