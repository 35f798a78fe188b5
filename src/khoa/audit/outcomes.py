"""Write calls whose outcome was lost to a crash, marked as such when their process is gone.

A write is recorded before it runs and completed with its outcome afterwards. A process killed in
between (kill -9, power loss) leaves the first record alone: no outcome, no error - which reads like a
success. So the first record carries a marker naming the process that wrote it
(``additionalEventData.khoaPending``); completing the call replaces the whole record (without it).
When a process starts, it looks at the undelivered events still marked by a process of this host that
is no longer running and records the outcome as unknown: ``errorCode`` ``Khoa.OutcomeUnknown`` (what
``khoa audit tail`` and LookupEvents show) and ``additionalEventData.outcome`` ``unknown``.

Only events not yet delivered to a log file are changed: a delivered record is hashed into its file
and digest, and changing its row would make the database disagree with the signed trail (delivery
waits ten seconds after an event was recorded, so a prompt restart finds its events undelivered).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from khoa.audit.events import AuditEvent
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

PENDING_KEY = "khoaPending"
UNKNOWN_CODE = "Khoa.OutcomeUnknown"
UNKNOWN_MESSAGE = (
    "The server stopped before this call's outcome was recorded: the call may or may not have taken effect."
)
_EVENTS = schema.audit_events
_DELIVERY = schema.audit_delivery
_BATCH = 500


def _host() -> str:
    """This host, as a short hash (the marker may reach a log file: it need not name the machine)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Writer:
    """The process that records events: host hash, process id and a token unique to this process
    (a later process may get the same id)."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Writer:
        return cls(_host(), os.getpid(), secrets.token_hex(4))

    @property
    def marker(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    def mark_pending(self, event: AuditEvent) -> None:
        """Mark a write's first record (made before the call runs) as waiting for its outcome."""
        data = event.record.get("additionalEventData")
        event.record["additionalEventData"] = {
            **(data if isinstance(data, dict) else {}),
            PENDING_KEY: self.marker,
        }

    def is_gone(self, marker: str) -> bool:
        """Whether the process that wrote ``marker`` is known to be gone (only this host's can be)."""
        host, _, rest = marker.partition(":")
        pid_text, _, token = rest.partition(":")
        if host != self.host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == self.pid:
            return token != self.token  # an earlier process that had this process's id
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, someone else's
        return False


def unknown_outcome(record: dict[str, object]) -> dict[str, object]:
    """``record`` (a write's first record) with its outcome stated as unknown."""
    data = record.get("additionalEventData")
    details = {k: v for k, v in (data.items() if isinstance(data, dict) else ()) if k != PENDING_KEY}
    details["outcome"] = "unknown"
    marked = {k: v for k, v in record.items() if k != "additionalEventData"}
    marked["additionalEventData"] = details
    marked["errorCode"] = UNKNOWN_CODE
    marked["errorMessage"] = UNKNOWN_MESSAGE
    return marked


def mark_lost_outcomes(engine: Engine, writer: Writer) -> int:
    """Record "outcome unknown" on every undelivered first record whose writer is gone; returns how
    many. Each row is changed only if it still holds the record read (a late completion wins)."""
    with engine.connect() as conn:
        delivered = conn.execute(
            select(_DELIVERY.c.delivered_seq).where(_DELIVERY.c.name == "trail")
        ).scalar()
    after = int(delivered or 0)
    c = _EVENTS.c
    marked = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(c.seq, c.event_id, c.record)
                .where(c.seq > after, c.read_only.is_(False), c.error_code.is_(None))
                .where(c.record.contains(f'"{PENDING_KEY}":'))
                .order_by(c.seq)
                .limit(_BATCH)
            ).all()
        if not rows:
            return marked
        after = rows[-1].seq
        for row in rows:
            record = json.loads(row.record)
            data = record.get("additionalEventData")
            pending = data.get(PENDING_KEY) if isinstance(data, dict) else None
            if not isinstance(pending, str) or not writer.is_gone(pending):
                continue
            text = json.dumps(unknown_outcome(record), separators=(",", ":"), default=str)
            with engine.begin() as conn:
                changed = conn.execute(
                    update(_EVENTS)
                    .where(c.event_id == row.event_id, c.record == row.record)
                    .values(record=text, error_code=UNKNOWN_CODE)
                ).rowcount
                if changed:
                    marked += 1
                    log.warning(
                        "audit event %s: its call's outcome was lost when its process stopped; "
                        "recorded as %s",
                        row.event_id,
                        UNKNOWN_CODE,
                    )
