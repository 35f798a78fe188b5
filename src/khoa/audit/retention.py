"""Retention of recorded events: delivered events older than the retention leave the database.

Only events already in a log file go (their log files stay, and the digests vouch for them), so
retention never loses an event the trail has not kept elsewhere.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, delete, or_

from khoa.audit.delivery import Delivery
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

_EVENTS = schema.audit_events


def apply_retention(engine: Engine, delivery: Delivery, retention_days: float, now: float) -> int:
    """Remove delivered events older than ``retention_days`` (their log files stay); returns how
    many went. A retention of 0 or less keeps everything."""
    if retention_days <= 0:
        return 0
    cutoff = now - retention_days * 86400.0
    delivered = delivery.state().delivered_seq
    with engine.begin() as conn:
        result = conn.execute(
            delete(_EVENTS)
            .where(or_(_EVENTS.c.seq <= delivered, _EVENTS.c.log_file.is_not(None)))
            .where(_EVENTS.c.event_time < cutoff)
        )
    if result.rowcount:
        log.info("audit retention removed %d delivered events", result.rowcount)
    return int(result.rowcount or 0)
