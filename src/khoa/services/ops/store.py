"""Where khoa-ops' SQL lives: reading the alerts the alert engine stored (``alerts`` table).

The handlers decide what a call asks for (filters, NextToken, page size); this module only turns
that into one keyset query, so the SQL of the service stays in one place (docs/architecture.md,
"Services").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Row, and_, or_, select

from khoa.storage import schema

_ALERTS = schema.alerts


class OpsStore:
    """Reads for khoa-ops' handlers, on the installation's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def alerts_page(
        self,
        account_id: str,
        *,
        severities: Sequence[str] | None,
        rule: str | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """Up to ``limit`` of ``account_id``'s alerts, newest first (``raised_at`` descending, then
        ``alert_id``): only ``severities`` and ``rule`` when given, and only those after the keyset
        position ``after`` (``raised_at``, ``alert_id`` of the last alert of the previous page)."""
        c = _ALERTS.c
        query = select(_ALERTS).where(c.account_id == account_id)
        if severities is not None:
            query = query.where(c.severity.in_(severities))
        if rule is not None:
            query = query.where(c.rule == rule)
        if after is not None:
            at, alert_id = after
            query = query.where(or_(c.raised_at < at, and_(c.raised_at == at, c.alert_id > alert_id)))
        query = query.order_by(c.raised_at.desc(), c.alert_id).limit(limit)
        with self.engine.connect() as conn:
            return conn.execute(query).all()
