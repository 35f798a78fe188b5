"""Prometheus metrics, held in a registry owned by the app object (no module-level state).

Every series is named ``khoa_…``. Counters follow from each response's outcome (its error code);
gauges about stored resources (keys pending deletion, secrets overdue for rotation) are read from the
database when scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from khoa.alerts.metrics import AlertsRaised
from khoa.blocking import SingleFlight
from khoa.clock import wall_clock
from khoa.logs import LogLimiter
from khoa.storage import schema

log = logging.getLogger("khoa")

ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
DECRYPTION_FAILURES = frozenset({"InvalidCiphertextException", "DecryptionFailure"})
THROTTLES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})


# Label sets a metric keeps its children for (its label values are the server's own names: services,
# operations or "unknown", outcomes; the bound only guards against a label taken from a request).
_KEPT_CHILDREN = 4096


class _KeptChildren(MetricWrapperBase):
    """``labels()`` answered from a plain dict of the children already made, keyed by the label
    values as given (prometheus_client checks and converts the values, then takes a lock, on every
    call; this is on every request's path). Children are made, and kept, by prometheus_client; a
    label set it drops (``remove``, ``clear``) is dropped here too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._kept: dict[tuple[Any, ...], Self] = {}
        super().__init__(*args, **kwargs)

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        child = self._kept.get(labelvalues) if labelvalues and not labelkwargs else None
        if child is None:
            child = super().labels(*labelvalues, **labelkwargs)
            if labelvalues and not labelkwargs and len(self._kept) < _KEPT_CHILDREN:
                self._kept[labelvalues] = child
        return child

    def remove(self, *labelvalues: Any) -> None:
        self._kept = {}
        super().remove(*labelvalues)

    def clear(self) -> None:
        self._kept = {}
        super().clear()


class _Counter(_KeptChildren, Counter):
    pass


class _Histogram(_KeptChildren, Histogram):
    pass


class TrailState(Protocol):
    """What the metrics read of the trail's delivery health (:class:`khoa.audit.health.TrailHealth`)."""

    @property
    def failures(self) -> int: ...

    def known_problem(self) -> str | None: ...

    def space(self) -> dict[str, tuple[int, int]]: ...


class Metrics:
    """The registry ``/metrics`` renders.

    With an ``engine``, the scrape also reads gauges and alert counts from the database; ``now`` is
    the domain clock those gauges compare with (the app passes its ``Clock.now``, which ``--dev`` can
    advance). Without one (unit tests), only the request counters exist.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        now: Callable[[], datetime] = wall_clock,
        trail: TrailState | None = None,
    ) -> None:
        """``trail``: the audit trail's delivery health, when log files are delivered."""
        self.registry = CollectorRegistry()
        self.requests = _Counter(
            "khoa_requests",
            "API requests by service, operation and outcome",
            ["service", "operation", "outcome"],
            registry=self.registry,
        )
        self.latency = _Histogram(
            "khoa_request_duration_seconds",
            "API request latency",
            ["service", "operation"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.auth_failures = Counter(
            "khoa_authentication_failures",
            "Requests refused by authentication",
            ["code"],
            registry=self.registry,
        )
        self.access_denied = _Counter(
            "khoa_access_denied",
            "Requests refused by authorisation (AccessDenied)",
            ["service", "operation"],
            registry=self.registry,
        )
        self.decrypt_failures = Counter(
            "khoa_decryption_failures", "Ciphertexts that failed to decrypt", registry=self.registry
        )
        self.throttles = _Counter(
            "khoa_throttled_requests", "Requests refused by throttling", ["service"], registry=self.registry
        )
        self.audit_failures = Counter(
            "khoa_audit_sink_errors", "Audit events that could not be recorded", registry=self.registry
        )
        self.sealed = Gauge("khoa_sealed", "1 while the server is sealed", registry=self.registry)
        self.leader = Gauge(
            "khoa_leader",
            "1 while this process leads background work (holds the jobs lease), else 0",
            registry=self.registry,
        )
        self.xks_latency = _Histogram(
            "khoa_xks_proxy_request_duration_seconds",
            "Latency of calls to external key stores' XKS proxies, by XKS operation",
            ["operation"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.xks_errors = Counter(
            "khoa_xks_proxy_errors",
            "Failed calls to XKS proxies, by XKS operation and failure (the spec's errorName, "
            "Unreachable, Timeout, TlsFailure or InvalidResponse)",
            ["operation", "error"],
            registry=self.registry,
        )
        self._stored: DatabaseGauges | None = None
        if engine is not None:
            self._stored = DatabaseGauges([StoredResources(engine, now), AlertsRaised(engine)])
            self.registry.register(self._stored)
        if trail is not None:
            self.registry.register(TrailDelivery(trail))

    def watch_leader(self, is_leader: Callable[[], bool]) -> None:
        """Report ``khoa_leader`` from ``is_leader`` at every scrape (khoa.jobs.JobRunner.is_leader)."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    def count_request(self, service: str, operation: str, outcome: str) -> None:
        """Count one answered request; ``outcome`` is "ok" or the error code."""
        self.requests.labels(service, operation, outcome).inc()
        if outcome in ACCESS_DENIED:
            self.access_denied.labels(service, operation).inc()
        elif outcome in DECRYPTION_FAILURES:
            self.decrypt_failures.inc()
        elif outcome in THROTTLES:
            self.throttles.labels(service).inc()

    def xks_call(self, operation: str, outcome: str, seconds: float) -> None:
        """One call to an XKS proxy (a listener of :class:`khoa.services.kms.xks.XksClient`)."""
        self.xks_latency.labels(operation).observe(seconds)
        if outcome != "ok":
            self.xks_errors.labels(operation, outcome).inc()

    def render(self) -> bytes:
        """The scrape's text. Blocks up to :data:`DATABASE_GAUGES_SECONDS` for the gauges read from
        the database: call it off the event loop (khoa.server.admin)."""
        return generate_latest(self.registry)

    def close(self) -> None:
        if self._stored is not None:
            self._stored.close()


# A scrape waits this long for the gauges read from the database, then answers without them (the
# queries go on within the database bounds, one at a time, and the next scrape shares them).
DATABASE_GAUGES_SECONDS = 1.0


class DatabaseGauges(Collector):
    """The collectors that query the database, run off the scrape's thread and waited for a bounded
    time: a silent or slow database leaves their series out of a scrape (and says so in the log, once
    per interval) rather than holding the scrape, whose other series matter most during an outage."""

    def __init__(self, collectors: list[Collector], seconds: float = DATABASE_GAUGES_SECONDS) -> None:
        self.seconds = seconds
        self._reads = SingleFlight(lambda: [f for c in collectors for f in c.collect()], "khoa-gauges")
        self._logs = LogLimiter(log)

    def describe(self) -> list[Metric]:
        return []  # no query at registration; the series are named in collect()

    def collect(self) -> Iterator[Metric]:
        try:
            families = self._reads.result_within(self.seconds)
        except TimeoutError:
            self._logs.warning(
                "metrics:timeout",
                "metrics: the database did not answer within %.1f s; its gauges are left out",
                self.seconds,
            )
            return
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is down
            # The exception's type only: its text may carry the database URL.
            self._logs.warning(
                "metrics:failed", "metrics: could not read the database's gauges (%s)", type(exc).__name__
            )
            return
        yield from families

    def close(self) -> None:
        self._reads.close()


class TrailDelivery(Collector):
    """Whether the trail's log files can be delivered, as this process last saw it (no probe at
    scrape time: a scrape runs on the event loop)."""

    def __init__(self, trail: TrailState) -> None:
        self.trail = trail

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        failing = self.trail.known_problem() is not None
        yield GaugeMetricFamily(
            "khoa_audit_delivery_failing",
            "1 while the audit directory is unwritable or log file delivery fails",
            value=1.0 if failing else 0.0,
        )
        yield CounterMetricFamily(
            "khoa_audit_delivery_errors",
            "Failed log file deliveries and audit directory write probes",
            value=self.trail.failures,
        )
        free = GaugeMetricFamily(
            "khoa_storage_free_bytes",
            "Bytes free (to an unprivileged writer) on the file system of the audit trail's and the "
            "SQLite database's directories, as the latest probe read them",
            labels=["directory"],
        )
        size = GaugeMetricFamily(
            "khoa_storage_size_bytes",
            "Size of the file system of the audit trail's and the SQLite database's directories",
            labels=["directory"],
        )
        for directory, (free_bytes, size_bytes) in sorted(self.trail.space().items()):
            free.add_metric([directory], float(free_bytes))
            size.add_metric([directory], float(size_bytes))
        yield free
        yield size


class StoredResources(Collector):
    """Gauges read from the database at scrape time (one cheap aggregate query each; a database
    error is raised to :class:`DatabaseGauges`)."""

    def __init__(self, engine: Engine, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.now = now

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no query at registration; the series are named in collect()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        keys = schema.kms_keys
        secrets = schema.sm_secrets
        now = self.now().timestamp()
        with self.engine.connect() as conn:
            pending = conn.execute(
                select(func.count()).select_from(keys).where(keys.c.state == "PendingDeletion")
            ).scalar_one()
            overdue = conn.execute(
                select(func.count())
                .select_from(secrets)
                .where(secrets.c.rotation_enabled.is_(True))
                .where(secrets.c.deleted_at.is_(None))
                .where(secrets.c.next_rotation_at.is_not(None))
                .where(secrets.c.next_rotation_at < now)
            ).scalar_one()
        yield GaugeMetricFamily("khoa_kms_keys_pending_deletion", "KMS keys pending deletion", value=pending)
        yield GaugeMetricFamily(
            "khoa_secrets_rotation_overdue",
            "Secrets with rotation enabled whose next rotation is past due",
            value=overdue,
        )
