"""Readiness: may this process take traffic? Not while sealed, nor while the database or the audit
sink is down (a call whose event cannot be recorded is refused, so the process would only refuse)."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Engine, select, text

from khoa.storage import schema

# After the audit sink fails to commit, the process stays unready this long (or until a commit
# succeeds), even if the read probe passes: a failed commit is what clients saw.
AUDIT_FAILURE_WINDOW_SECONDS = 30.0


class AuditHealth(Protocol):
    """What readiness needs of the audit sink (:class:`khoa.audit.recorder.AuditRecorder`)."""

    def failed_within(self, seconds: float) -> bool: ...


def readiness(engine: Engine, audit: AuditHealth) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``/_khoa/ready``: probes ``engine`` and the trail's table, then asks
    the audit sink whether a commit failed lately."""
    report: dict[str, Any] = {"status": "ok", "sealed": False, "database": "ok", "audit": "ok"}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means not ready
        report.update(status="unavailable", database="down", audit="down")
        return 503, report
    try:
        with engine.connect() as conn:
            conn.execute(select(schema.audit_events.c.seq).limit(1)).all()
    except Exception:  # noqa: BLE001 - the trail's table cannot be read: the sink is down
        report.update(status="unavailable", audit="down")
        return 503, report
    if audit.failed_within(AUDIT_FAILURE_WINDOW_SECONDS):
        report.update(status="unavailable", audit="failing")
        return 503, report
    return 200, report
