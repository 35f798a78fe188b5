"""The rotation engine around the jobs leader (SQLite): a step that runs too long fails the rotation
instead of holding the pass, a claim is renewed while a step runs and expires quickly when its node
dies, and a node that lost the jobs lease records nothing more of the run it was running."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from khoa.clock import Clock
from khoa.jobs import JobRunner
from khoa.secret_rotation.engine import RotationEngine, RotationSettings
from khoa.services.secretsmanager.store import SecretStore
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate
from tests.support.handlers import barrier
from tests.unit.test_rotation_engine import ACCOUNT, Audit, register


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


def _secret_with_function(engine: Engine, target: str) -> None:
    """A secret whose rotation function is ``target`` (a Python function)."""
    register(engine, target=target)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id="secret-1",
                account_id=ACCOUNT,
                region="us-east-1",
                name="db",
                arn=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-AbCdEf",
                created_at=now,
                last_changed_at=now,
                rotation_enabled=False,
                rotation_lambda_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator",
            )
        )


RELEASE = threading.Event()
ENTERED = threading.Event()


def slow_step(event: dict[str, Any], client: Any) -> None:
    """A function whose createSecret waits for the test (at most 10 s)."""
    if event["Step"] == "createSecret":
        ENTERED.set()
        RELEASE.wait(10)


def quick_engine(engine: Engine, step_timeout: float = 5.0, claim: float = 0.6) -> RotationEngine:
    settings = RotationSettings(
        "http://127.0.0.1:9440", dev=True, step_timeout_seconds=step_timeout, claim_seconds=claim
    )
    return RotationEngine(engine, barrier(), SecretStore(engine), Audit(), settings)


def run_row(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(schema.rotation_runs)).first()


def test_a_step_that_runs_too_long_fails_the_rotation(engine: Engine) -> None:
    RELEASE.clear()
    _secret_with_function(engine, "tests.unit.test_rotation_leader:slow_step")
    node = quick_engine(engine, step_timeout=0.5)
    assert node.start("secret-1", "token-1", time.time())
    started = time.monotonic()
    [outcome] = node.run_due(datetime.now(UTC))
    elapsed = time.monotonic() - started
    RELEASE.set()
    assert not outcome.succeeded
    assert outcome.error == "createSecret timed out after 0.5 s"
    assert elapsed < 5, "the pass waited for the step"
    row = run_row(engine)
    assert (row.step, row.attempts, row.owner) == ("createSecret", 1, None)
    assert "timed out" in row.last_error


def test_a_claim_is_renewed_while_a_step_runs(engine: Engine) -> None:
    RELEASE.clear()
    ENTERED.clear()
    _secret_with_function(engine, "tests.unit.test_rotation_leader:slow_step")
    node = quick_engine(engine, claim=0.6)
    assert node.start("secret-1", "token-1", time.time())
    worker = threading.Thread(target=node.run_due, args=(datetime.now(UTC),))
    worker.start()
    try:
        assert ENTERED.wait(5)
        time.sleep(1.5)  # well past the 0.6 s claim: only renewal keeps it
        row = run_row(engine)
        assert row.owner == node.node and row.owner_expires_at > time.time()
        other = quick_engine(engine, claim=0.6)
        assert not other._claim(row), "another node took a run whose step is still running"
    finally:
        RELEASE.set()
        worker.join(10)
    assert run_row(engine) is None, "the rotation finished"


def test_a_run_claimed_by_a_dead_node_is_resumed_within_the_claim_time(engine: Engine) -> None:
    _secret_with_function(engine, "tests.unit.test_rotation_engine:recording_step")
    dead = quick_engine(engine, claim=0.6)
    assert dead.start("secret-1", "token-1", time.time())
    assert dead._claim(run_row(engine))  # ...and then it died: nobody renews the claim
    survivor = quick_engine(engine, claim=0.6)
    started = time.monotonic()
    outcomes = survivor.run_due(datetime.now(UTC))
    assert [o.succeeded for o in outcomes] == [True]
    assert time.monotonic() - started < 3, "the survivor waited for the claim to run out, not longer"
    assert run_row(engine) is None


def test_a_node_that_lost_the_lease_records_nothing_more(engine: Engine) -> None:
    """Node A's pass outlives its lease (B is the leader now): its step ends, but A neither advances
    the run nor records an outcome; the run stays for its next owner."""
    RELEASE.clear()
    ENTERED.clear()
    _secret_with_function(engine, "tests.unit.test_rotation_leader:slow_step")
    runner_a = JobRunner(engine, Clock(), 3600, lease_seconds=60)
    runner_b = JobRunner(engine, Clock(), 3600, lease_seconds=60)
    node_a = quick_engine(engine, claim=0.6)
    outcomes: list[Any] = []
    runner_a.register("rotate", lambda now: outcomes.extend(node_a.run_due(now)))
    try:
        assert node_a.start("secret-1", "token-1", time.time())
        worker = threading.Thread(target=runner_a.run_due)
        worker.start()
        assert ENTERED.wait(5)
        with engine.begin() as conn:
            conn.execute(update(schema.leases).values(expires_at=0.0))
        assert runner_b.acquire_lease()  # B takes over while A's step still runs
        RELEASE.set()
        worker.join(10)
        row = run_row(engine)
        assert row is not None and row.step == "createSecret" and row.attempts == 0
        assert node_a.succeeded == 0 and node_a.failed == 0
        assert [o.error.startswith("abandoned") for o in outcomes] == [True]
    finally:
        RELEASE.set()
        runner_a.fence.close()
        runner_b.fence.close()
