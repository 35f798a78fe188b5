"""Khoa's own endpoints: health, readiness, Prometheus metrics, and the development-mode hooks.

The hooks that reset state, move the domain clock or run background work exist only in ``--dev``
(loopback only). Outside it nothing may move the clock or run jobs on request: a clock advanced from
outside destroys keys pending deletion and ends sessions. Tests use their own harness
(tests/support/hooks), which the product does not know about.
"""

from __future__ import annotations

import json
from datetime import timedelta

from khoa.blocking import SingleFlight
from khoa.observe.health import ReadinessProbe
from khoa.observe.metrics import Metrics
from khoa.runtime import Runtime
from khoa.server.asgi import Response, Scope, json_response

ADMIN_BODY_LIMIT = 64 * 1024
# A scrape's bound: the database's gauges are waited for DATABASE_GAUGES_SECONDS, the rest is memory;
# well inside Prometheus' default scrape timeout (10 s).
SCRAPE_SECONDS = 5.0
# The development clock moves forward only, and never past what a datetime can hold.
MAX_ADVANCE_SECONDS = 100 * 365 * 86400.0
JOBS_RUN = "/_khoa/jobs/run"


def is_admin(path: str) -> bool:
    return path.startswith("/_khoa/") or path.startswith("/moto-api/") or path == "/metrics"


class AdminRoutes:
    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.ready = ReadinessProbe(runtime.engine, runtime.audit)
        # A scrape is rendered off the event loop: it waits (a bounded time) for the gauges read from
        # the database. Scrapes that come together share one rendering.
        self.scrapes = SingleFlight(metrics.render, "khoa-scrape")
        # Which process leads background work, in /metrics as in /_khoa/ready.
        metrics.watch_leader(lambda: runtime.jobs.is_leader)

    async def answer(self, scope: Scope, path: str, body: bytes) -> Response:
        method = scope["method"]
        runtime = self.runtime
        dev = runtime.settings.dev
        if path == "/_khoa/health" and method in ("GET", "HEAD"):
            # Liveness: answered from memory, never from the database (an outage is no reason to restart).
            return json_response(200, {"status": "ok", "sealed": False, "dev": dev})
        if path == "/_khoa/ready" and method in ("GET", "HEAD"):
            status, report = await self.ready.answer()  # within 1 s, off the event loop
            report["leader"] = runtime.jobs.is_leader  # runs background work (holds the jobs lease)
            return json_response(status, report)
        if path == "/metrics" and method == "GET":
            try:
                text = await self.scrapes.answer_within(SCRAPE_SECONDS)
            except TimeoutError:
                return json_response(503, {"error": f"metrics not rendered within {SCRAPE_SECONDS:.0f} s"})
            return Response(200, text, b"text/plain; version=0.0.4; charset=utf-8")
        if not dev:
            return json_response(404, {"error": "not found"})
        if path in ("/_khoa/reset", "/moto-api/reset") and method == "POST":
            runtime.reset()
            return json_response(200, {"status": "ok"})
        if path == "/_khoa/clock/advance" and method == "POST":
            try:
                seconds = float(json.loads(body or b"{}").get("seconds", 0))
                if not 0 <= seconds <= MAX_ADVANCE_SECONDS:  # NaN fails too
                    raise ValueError(seconds)
                runtime.clock.advance(timedelta(seconds=seconds))
            except (ValueError, TypeError, AttributeError):
                return json_response(400, {"error": 'expected {"seconds": N} with 0 <= N <= 100 years'})
            return json_response(200, {"now": runtime.clock.now().isoformat()})
        if path == JOBS_RUN and method == "POST":
            return json_response(200, {"ran": await runtime.jobs.run_due_async()})
        return json_response(404, {"error": "not found"})

    def close(self) -> None:
        """Stop the probe's and the scrape's threads (at shutdown)."""
        self.ready.close()
        self.scrapes.close()
        self.metrics.close()
