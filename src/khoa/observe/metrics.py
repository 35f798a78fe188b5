"""Prometheus metrics, held in a registry owned by the app object (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "khoa_requests",
            "API requests by service, operation and outcome",
            ["service", "operation", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
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
        self.decrypt_failures = Counter(
            "khoa_decryption_failures", "Ciphertexts that failed to decrypt", registry=self.registry
        )
        self.audit_failures = Counter(
            "khoa_audit_sink_errors", "Audit events that could not be recorded", registry=self.registry
        )
        self.sealed = Gauge("khoa_sealed", "1 while the server is sealed", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
