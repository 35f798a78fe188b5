"""``/_khoa/ready``'s probe: it answers in time whatever the database does, and says why it is not
ready. No timing assertions: a blocked check is simulated, and the answer's content is checked."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy import create_engine, event

from khoa.observe.health import ReadinessProbe


class Audit:
    def failed_within(self, seconds: float) -> bool:
        return False

    def trail_problem(self) -> str | None:
        return None


def test_a_silent_database_gets_503_with_the_reason_and_one_check_at_a_time() -> None:
    engine = create_engine("sqlite://")
    release = threading.Event()
    connects: list[int] = []

    @event.listens_for(engine, "connect")
    def silent(_dbapi: Any, _record: Any) -> None:
        connects.append(1)
        release.wait(30)  # the database does not answer until the test says so

    probe = ReadinessProbe(engine, Audit(), timeout_seconds=0.05)
    try:
        status, body = asyncio.run(probe.answer())
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["database"] == "timeout"
        assert body["reason"].startswith("database did not answer within")
        assert asyncio.run(probe.answer())[0] == 503
        assert len(connects) == 1  # the second probe waited on the first check, it did not start another
    finally:
        release.set()
        probe.close()
        engine.dispose()


def test_a_failing_database_says_so_without_its_url() -> None:
    engine = create_engine("sqlite:////nonexistent/secret-password-dir/khoa.db")
    probe = ReadinessProbe(engine, Audit())
    try:
        status, body = asyncio.run(probe.answer())
        assert status == 503
        assert body["database"] == "down"
        assert body["reason"] == "database unavailable (OperationalError)"
        assert "secret-password" not in str(body)
    finally:
        probe.close()
        engine.dispose()
