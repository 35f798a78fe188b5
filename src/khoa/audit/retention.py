"""Retention of recorded events: delivered events older than the retention leave the database.

Only events already in a log file go (their log files stay, and the digests vouch for them), so
retention never loses an event the trail has not kept elsewhere; and only events already counted in
the last-use tables (:mod:`khoa.audit.usage`), so a key's last use outlives its event.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, and_, delete, func, or_, select

from khoa.audit.delivery import Delivery
from khoa.audit.usage import counted_until
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

_EVENTS = schema.audit_events
BATCH = 5000


def apply_retention(engine: Engine, delivery: Delivery, retention_days: float, now: float) -> int:
    """Remove delivered events older than ``retention_days`` (their log files stay); returns how
    many went. A retention of 0 or less keeps everything.

    Events go in windows of :data:`BATCH` sequence numbers from the oldest, a transaction each: one
    DELETE of a year's backlog would hold its locks (and, on SQLite, the database) for as long as it
    takes, stalling every request. Each window is a range of the primary key: a query for "the
    oldest expired events" cannot use an index for "delivered, or delivered by the old scheme", so
    PostgreSQL read the whole table for every batch (past the statement timeout on a large trail,
    which would have stopped retention for good). Events are numbered in the order they were
    recorded, so the first window with nothing to remove is where the expired events end; one
    recorded out of order by a few seconds goes on the next pass.
    """
    if retention_days <= 0:
        return 0
    cutoff = now - retention_days * 86400.0
    delivered = delivery.state().delivered_seq
    seq = _EVENTS.c.seq
    counted = counted_until(engine)
    expired = and_(
        or_(seq <= delivered, _EVENTS.c.log_file.is_not(None)), seq <= counted, _EVENTS.c.event_time < cutoff
    )
    removed = 0
    after = 0
    while True:
        with engine.begin() as conn:
            first = conn.execute(select(func.min(seq)).where(seq > after)).scalar()
            if first is None:
                break
            last = int(first) + BATCH - 1
            went = int(conn.execute(delete(_EVENTS).where(seq >= first, seq <= last, expired)).rowcount or 0)
        removed += went
        if not went:
            break
        after = last
    if removed:
        log.info("audit retention removed %d delivered events", removed)
    return removed
