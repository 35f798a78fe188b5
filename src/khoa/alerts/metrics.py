"""``khoa_alerts_raised_total{rule}``, counted from the alerts table at scrape time, so every process
sharing the database reports the same numbers whichever one is the job leader."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from khoa.alerts.config import RULES
from khoa.storage import schema


class AlertsRaised(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[CounterMetricFamily]:
        return []  # no query at registration; the series are named in collect()

    def collect(self) -> Iterator[CounterMetricFamily]:
        alerts = schema.alerts
        # A database error is raised to the scrape's bounded reader (khoa.observe.metrics.DatabaseGauges).
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(select(alerts.c.rule, func.count()).group_by(alerts.c.rule)).tuples().all()
            )
        family = CounterMetricFamily("khoa_alerts_raised", "Alerts raised, by rule", labels=["rule"])
        for rule in sorted(set(RULES) | set(counts)):
            family.add_metric([rule], float(counts.get(rule, 0)))
        yield family
