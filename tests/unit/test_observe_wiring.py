"""Metrics built from exactly what they read (the database and the domain clock), without a server or
an application object: the overdue-rotation gauge compares with the clock it is given, which
``--dev`` can move forward."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, insert

from khoa.observe.metrics import Metrics
from khoa.storage import schema

ACCOUNT = "111122223333"
REGION = "us-east-1"


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
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
