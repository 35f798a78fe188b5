"""Durable, group-committed recording of audit events.

Every request awaits its event's commit before a response leaves the server: events from concurrent
requests are batched into one transaction on a dedicated writer thread (so the event loop keeps
serving while the database syncs), and if the batch cannot be committed every request in it is
refused. Nothing is ever acknowledged without its event on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, insert, update

from khoa.audit.events import AuditEvent
from khoa.protocol.errors import AWSError
from khoa.storage import schema

log = logging.getLogger("khoa.audit")
_MAX_BATCH = 512


class AuditUnavailable(Exception):
    """The audit sink could not record an event; the request must be refused."""


def unavailable_error() -> AWSError:
    return AWSError(
        "ServiceUnavailableException",
        "The audit trail is unavailable, so the request was not processed. Try again later.",
        503,
    )


def rows_for(events: list[AuditEvent]) -> list[dict[str, object]]:
    return [
        {
            "event_id": e.event_id,
            "account_id": e.account_id,
            "region": e.region,
            "event_time": e.event_time,
            "event_source": e.event_source,
            "event_name": e.event_name,
            "username": e.username,
            "access_key_id": e.access_key_id,
            "resource_names": "\n".join(r["ARN"] for r in e.resources) or None,
            "resource_types": "\n".join(sorted({r["type"] for r in e.resources})) or None,
            "read_only": e.read_only,
            "error_code": e.error_code,
            "record": json.dumps(e.record, separators=(",", ":"), default=str),
        }
        for e in events
    ]


class AuditRecorder:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.enabled = True
        self.failures = 0
        # time.monotonic() of the latest failed and successful commits (readiness reads them)
        self.last_failure_at = 0.0
        self.last_success_at = 0.0
        self._pending: list[tuple[str, AuditEvent, asyncio.Future[None]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khoa-audit")

    def write(self, events: list[AuditEvent], updates: list[AuditEvent] | None = None) -> None:
        """Commit new events, and final versions of events recorded before their call ran, in one
        transaction (background jobs and tests call this directly)."""
        table = schema.audit_events
        with self.engine.begin() as conn:
            if events:
                conn.execute(insert(table), rows_for(events))
            for event in updates or []:
                row = rows_for([event])[0]
                conn.execute(
                    update(table)
                    .where(table.c.event_id == event.event_id)
                    .values(
                        record=row["record"],
                        error_code=row["error_code"],
                        resource_names=row["resource_names"],
                        resource_types=row["resource_types"],
                    )
                )

    async def record(self, event: AuditEvent) -> None:
        """Return once ``event`` is durable; raise AuditUnavailable if it cannot be."""
        await self._submit("insert", event)

    async def finalize(self, event: AuditEvent) -> None:
        """Replace an event recorded before its call ran with the call's outcome."""
        await self._submit("update", event)

    async def _submit(self, kind: str, event: AuditEvent) -> None:
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((kind, event, future))
        if not self._flushing:
            self._flushing = True
            self._task = loop.create_task(self._flush_loop())
        await future

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await asyncio.sleep(0)  # let requests already running add their events to this batch
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                try:
                    inserts = [event for kind, event, _ in batch if kind == "insert"]
                    updates = [event for kind, event, _ in batch if kind == "update"]
                    await loop.run_in_executor(self._executor, self.write, inserts, updates)
                except Exception as exc:  # noqa: BLE001 - any sink failure refuses the whole batch
                    self.note_failure()
                    log.error("audit sink failed (%s); refusing %d requests", type(exc).__name__, len(batch))
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(AuditUnavailable())
                    continue
                self.last_success_at = time.monotonic()
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing = False

    def note_failure(self) -> None:
        self.failures += 1
        self.last_failure_at = time.monotonic()

    def failed_within(self, seconds: float) -> bool:
        """Whether a commit failed in the last ``seconds`` with no successful commit since."""
        return (
            self.failures > 0
            and self.last_failure_at > self.last_success_at
            and time.monotonic() - self.last_failure_at < seconds
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True)
