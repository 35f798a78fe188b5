"""Readiness: may this process take traffic? Not while sealed, nor while the database or the audit
sink is down (a call whose event cannot be recorded is refused, so the process would only refuse).

The probe answers within :data:`READY_TIMEOUT_SECONDS` whatever the database does: its queries run on
a thread of their own, and a probe that has not finished by then is answered 503 with the reason (the
query itself ends within the database bounds, khoa.storage.database, and at most one runs at a time).
Liveness (``/_khoa/health``) never asks the database: a database outage is not a reason to restart.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Engine, select, text

from khoa.blocking import SingleFlight
from khoa.storage import schema

# After the audit sink fails to commit, the process stays unready this long (or until a commit
# succeeds), even if the read probe passes: a failed commit is what clients saw.
AUDIT_FAILURE_WINDOW_SECONDS = 30.0
# Orchestrators time probes out after 1 s by default (Kubernetes' timeoutSeconds): answer before that.
READY_TIMEOUT_SECONDS = 1.0


class AuditHealth(Protocol):
    """What readiness needs of the audit sink (:class:`khoa.audit.recorder.AuditRecorder`)."""

    def failed_within(self, seconds: float) -> bool: ...

    def trail_problem(self) -> str | None: ...


def _unavailable(report: dict[str, Any], reason: str, **parts: str) -> tuple[int, dict[str, Any]]:
    report.update(status="unavailable", reason=reason, **parts)
    return 503, report


def readiness(engine: Engine, audit: AuditHealth) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``/_khoa/ready``: probes ``engine`` and the trail's table, then asks
    the audit sink whether a commit failed lately. Blocks for as long as the database takes (within
    its bounds): :class:`ReadinessProbe` is what answers in time."""
    report: dict[str, Any] = {"status": "ok", "sealed": False, "database": "ok", "audit": "ok"}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure means not ready
        # The exception's type only: its text may carry the database URL (and a password in it).
        reason = f"database unavailable ({type(exc).__name__})"
        return _unavailable(report, reason, database="down", audit="down")
    try:
        with engine.connect() as conn:
            conn.execute(select(schema.audit_events.c.seq).limit(1)).all()
    except Exception as exc:  # noqa: BLE001 - the trail's table cannot be read: the sink is down
        return _unavailable(report, f"audit table unreadable ({type(exc).__name__})", audit="down")
    # The trail's files: a write probe of the audit directory (and a SQLite database's, reading their
    # free space for the metrics), and what the latest delivery pass saw. Probed even when a failed
    # commit decides the answer: a full disk is when an operator reads the free space.
    problem = audit.trail_problem()
    if audit.failed_within(AUDIT_FAILURE_WINDOW_SECONDS):
        reason = f"an audit commit failed in the last {AUDIT_FAILURE_WINDOW_SECONDS:.0f} s"
        return _unavailable(report, reason, audit="failing")
    # Events still commit meanwhile, but the trail is not written.
    if problem is not None:
        return _unavailable(report, problem, audit="delivery-failing")
    return 200, report


class ReadinessProbe:
    """Answers ``/_khoa/ready`` within ``timeout_seconds`` without blocking the event loop.

    The checks run on one thread of the probe's own (not the loop's default executor, which
    requests may fill), one check at a time (:class:`khoa.blocking.SingleFlight`): a silent
    database never ties up more than one thread.
    """

    def __init__(
        self, engine: Engine, audit: AuditHealth, timeout_seconds: float = READY_TIMEOUT_SECONDS
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self._checks = SingleFlight(lambda: readiness(engine, audit), "khoa-ready")

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) within ``timeout_seconds``: the checks' answer, or 503 saying they
        did not finish in time."""
        try:
            return await self._checks.answer_within(self.timeout_seconds)
        except TimeoutError:
            report: dict[str, Any] = {
                "status": "ok",
                "sealed": False,
                "database": "unknown",
                "audit": "unknown",
            }
            reason = f"database did not answer within {self.timeout_seconds:.1f} s"
            return _unavailable(report, reason, database="timeout")
        except Exception as exc:  # noqa: BLE001 - the probe itself failed (it should not): not ready
            return _unavailable({"sealed": False}, f"readiness check failed ({type(exc).__name__})")

    def close(self) -> None:
        """Stop the probe's thread (a check still running ends within the database bounds)."""
        self._checks.close()
