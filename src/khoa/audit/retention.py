"""Retention of recorded events: delivered events older than the retention leave the database.

Only events already in a log file go (their log files stay, and the digests vouch for them), so
retention never loses an event the trail has not kept elsewhere.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, and_, delete, or_, select

from khoa.audit.delivery import Delivery
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

_EVENTS = schema.audit_events
BATCH = 5000


def apply_retention(engine: Engine, delivery: Delivery, retention_days: float, now: float) -> int:
    """Remove delivered events older than ``retention_days`` (their log files stay); returns how
    many went. A retention of 0 or less keeps everything.

    Events go in batches of :data:`BATCH`, a transaction each: one DELETE of a year's backlog would
    hold its locks (and, on SQLite, the database) for as long as it takes, stalling every request.
    """
    if retention_days <= 0:
        return 0
    cutoff = now - retention_days * 86400.0
    delivered = delivery.state().delivered_seq
    expired = and_(
        or_(_EVENTS.c.seq <= delivered, _EVENTS.c.log_file.is_not(None)), _EVENTS.c.event_time < cutoff
    )
    removed = 0
    while True:
        with engine.begin() as conn:
            batch = (
                conn.execute(select(_EVENTS.c.seq).where(expired).order_by(_EVENTS.c.seq).limit(BATCH))
                .scalars()
                .all()
            )
            if batch:
                removed += int(
                    conn.execute(delete(_EVENTS).where(expired, _EVENTS.c.seq <= batch[-1])).rowcount or 0
                )
        if len(batch) < BATCH:
            break
    if removed:
        log.info("audit retention removed %d delivered events", removed)
    return removed
