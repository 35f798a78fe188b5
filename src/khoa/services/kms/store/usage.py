"""What GetKeyLastUsage reads: KMS's own entries in the audit trail (written by the audit recorder)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from khoa.storage import schema

_EVENTS = schema.audit_events


@dataclass(frozen=True)
class KeyUse:
    """One recorded call: its operation, when, its audit event id, and the whole record (JSON)."""

    operation: str
    event_time: float
    event_id: str
    record: str


class UsageStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def last_use(self, key_arn: str, since: float, operations: Iterable[str]) -> KeyUse | None:
        """The newest successful KMS call of one of ``operations`` naming ``key_arn``, at or after
        ``since`` (the key's creation, where tracking starts)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_EVENTS.c.event_name, _EVENTS.c.event_time, _EVENTS.c.event_id, _EVENTS.c.record)
                .where(_EVENTS.c.event_source == "kms.amazonaws.com")
                .where(_EVENTS.c.event_name.in_(list(operations)))
                .where(_EVENTS.c.error_code.is_(None))
                .where(_EVENTS.c.event_time >= since)
                .where(_EVENTS.c.resource_names.contains(key_arn))
                .order_by(_EVENTS.c.seq.desc())
                .limit(1)
            ).first()
        return None if row is None else KeyUse(row.event_name, row.event_time, row.event_id, row.record)
