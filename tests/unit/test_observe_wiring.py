"""Metrics built from exactly what they read (the database and the domain clock), without a server or
an application object: the overdue-rotation gauge compares with the clock it is given, which
``--dev`` can move forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert

from khoa.observe.metrics import Metrics
from khoa.storage import schema

ACCOUNT = "111122223333"
REGION = "us-east-1"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    # A file: the gauges are read on a thread of their own (an in-memory database is one per thread).
    engine = create_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    schema.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_stored_resource_gauges_use_the_given_clock(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id="s1",
                account_id=ACCOUNT,
                region=REGION,
                name="app",
                arn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app-AbCdEf",
                created_at=0.0,
                last_changed_at=0.0,
                rotation_enabled=True,
                next_rotation_at=1000.0,
            )
        )
    moment = datetime.fromtimestamp(500, UTC)
    metrics = Metrics(engine, lambda: moment)
    value = metrics.registry.get_sample_value
    assert value("khoa_secrets_rotation_overdue") == 0
    assert value("khoa_kms_keys_pending_deletion") == 0
    moment = datetime.fromtimestamp(2000, UTC)  # the clock moved past the rotation date
    assert value("khoa_secrets_rotation_overdue") == 1
    assert value("khoa_alerts_raised_total", {"rule": "new-secret-reader"}) == 0


def test_without_a_database_only_request_counters_exist() -> None:
    metrics = Metrics()
    assert b"khoa_secrets_rotation_overdue" not in metrics.render()
    assert b"khoa_alerts_raised_total" not in metrics.render()


def test_a_silent_database_leaves_its_gauges_out_of_a_scrape_not_the_rest(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    metrics = Metrics(engine)
    assert metrics._stored is not None
    metrics._stored.seconds = 0.05

    @event.listens_for(engine, "before_cursor_execute")
    def silent(*_args: Any) -> None:
        release.wait(30)  # the database does not answer until the test says so

    try:
        metrics.count_request("kms", "Decrypt", "ok")
        text = metrics.render()
        assert b'khoa_requests_total{operation="Decrypt",outcome="ok",service="kms"} 1.0' in text
        assert b"khoa_leader" in text
        assert b"khoa_kms_keys_pending_deletion" not in text
        assert b"khoa_alerts_raised_total" not in text
        metrics.render()  # a second scrape waits on the same reads: logged once per interval
        lines = [r for r in caplog.records if "did not answer" in r.getMessage()]
        assert len(lines) == 1 and not lines[0].exc_info
        release.set()
        event.remove(engine, "before_cursor_execute", silent)
        deadline = time.monotonic() + 10
        while b"khoa_kms_keys_pending_deletion" not in metrics.render():  # the reads finish, then answer
            assert time.monotonic() < deadline
    finally:
        release.set()
        metrics.close()


def test_a_failing_database_is_logged_without_a_traceback_or_its_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("sqlite:////nonexistent/secret-password-dir/khoa.db")
    metrics = Metrics(engine)
    try:
        text = metrics.render()
        assert b"khoa_requests" in text and b"khoa_kms_keys_pending_deletion" not in text
        metrics.render()
        lines = [r for r in caplog.records if "gauges" in r.getMessage()]
        assert len(lines) == 1 and not lines[0].exc_info
        assert "OperationalError" in lines[0].getMessage()
        assert "secret-password" not in caplog.text
    finally:
        metrics.close()
        engine.dispose()
