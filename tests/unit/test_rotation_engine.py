"""The rotation engine's bookkeeping on a real (SQLite) database: the function registry, the claim that
keeps a run on one node, and the refusal to run a function without a role outside --dev."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from khoa.protocol.errors import AWSError
from khoa.secret_rotation import functions
from khoa.secret_rotation.engine import CLAIM_SECONDS, RotationEngine, RotationSettings
from khoa.secret_rotation.invoke import InvocationError
from khoa.services.secretsmanager.store import SecretStore
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate
from tests.support.handlers import barrier

ACCOUNT = "111122223333"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


class Audit:
    """Keeps what the engine records, as the audit writer would write it."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def write(self, events: list[Any]) -> None:
        self.events.extend(events)


def rotation_engine(engine: Engine, dev: bool = False) -> RotationEngine:
    return RotationEngine(
        engine,
        barrier(),
        SecretStore(engine),
        Audit(),
        RotationSettings(endpoint="http://127.0.0.1:9440", dev=dev),
    )


def register(engine: Engine, name: str = "rotator", **overrides: Any) -> None:
    values: dict[str, Any] = {
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "name": name,
        "kind": "python",
        "target": "tests.support.rotators:simple",
        "role_arn": None,
        "secret_sealed": None,
        "timeout_seconds": 30.0,
        "now": time.time(),
    }
    values.update(overrides)
    functions.register(engine, **values)


# -- the registry ------------------------------------------------------------------------------------------
def test_parse_arn() -> None:
    arn = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:my-rotator"
    assert functions.parse_arn(arn) == ("eu-west-1", ACCOUNT, "my-rotator")
    assert functions.parse_arn(arn + ":PROD") == ("eu-west-1", ACCOUNT, "my-rotator")
    for bad in (
        "my-rotator",
        f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:x",
        "arn:aws:lambda:eu-west-1:12:function:x",
    ):
        assert functions.parse_arn(bad) is None


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("shell", "x", "unknown function kind"),
        ("builtin", "oracle-single-user", "unknown built-in rotator"),
        ("python", "module_without_attribute", "module:function"),
        ("http", "ftp://example.com/x", r"http\(s\) URL"),
    ],
)
def test_register_refuses_what_cannot_work(engine: Engine, kind: str, target: str, message: str) -> None:
    with pytest.raises(functions.FunctionError, match=message):
        register(engine, kind=kind, target=target)


def test_register_replaces_and_lookup_finds(engine: Engine) -> None:
    register(engine, kind="builtin", target="postgresql-single-user")
    register(
        engine, kind="builtin", target="mysql-alternating-users", role_arn=f"arn:aws:iam::{ACCOUNT}:role/r"
    )
    found = functions.lookup(engine, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator")
    assert found is not None
    assert (found.kind, found.target, found.role_arn) == (
        "builtin",
        "mysql-alternating-users",
        f"arn:aws:iam::{ACCOUNT}:role/r",
    )
    assert found.arn == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator"
    assert functions.lookup(engine, f"arn:aws:lambda:us-west-2:{ACCOUNT}:function:rotator") is None
    assert [f.name for f in functions.list_functions(engine)] == ["rotator"]


# -- credentials -------------------------------------------------------------------------------------------
def test_a_function_without_a_role_cannot_run_outside_dev(engine: Engine) -> None:
    register(engine)
    function = functions.lookup(engine, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator")
    assert function is not None
    now = datetime.now(UTC)
    with pytest.raises(InvocationError, match="has no role"):
        rotation_engine(engine)._credentials(function, now)
    assert rotation_engine(engine, dev=True)._credentials(function, now) is None  # --dev: any signature


def test_a_function_whose_role_is_gone_cannot_run(engine: Engine) -> None:
    register(engine, role_arn=f"arn:aws:iam::{ACCOUNT}:role/deleted")
    function = functions.lookup(engine, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator")
    assert function is not None
    with pytest.raises(InvocationError, match="does not exist"):
        rotation_engine(engine)._credentials(function, datetime.now(UTC))


# -- the claim ---------------------------------------------------------------------------------------------
def _queued(engine: Engine, rotation: RotationEngine) -> Any:
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
                rotation_enabled=True,
            )
        )
    assert rotation.start("secret-1", "token-1", now)
    assert not rotation.start("secret-1", "token-2", now), "one rotation at a time"
    with engine.connect() as conn:
        # the token's version exists from the start, labelled AWSPENDING, with no value yet
        versions = conn.execute(
            select(schema.sm_versions.c.version_id, schema.sm_versions.c.value_kind)
        ).all()
        assert [tuple(v) for v in versions] == [("token-1", schema.SM_NO_VALUE)]
        stages = conn.execute(select(schema.sm_stages.c.stage, schema.sm_stages.c.version_id)).all()
        assert [tuple(s) for s in stages] == [("AWSPENDING", "token-1")]
        return conn.execute(select(schema.rotation_runs)).one()


def test_a_run_is_claimed_by_one_node(engine: Engine) -> None:
    node_a, node_b = rotation_engine(engine), rotation_engine(engine)
    run = _queued(engine, node_a)
    assert node_a._claim(run)
    assert not node_b._claim(run), "another node took a run that is being run"
    assert node_a._claim(run), "a node may renew its own claim"
    with engine.connect() as conn:
        claimed = conn.execute(select(schema.rotation_runs)).one()
    assert claimed.owner == node_a.node
    assert claimed.owner_expires_at == pytest.approx(time.time() + CLAIM_SECONDS, abs=5)


def test_a_dead_nodes_claim_expires(engine: Engine) -> None:
    node_a, node_b = rotation_engine(engine), rotation_engine(engine)
    run = _queued(engine, node_a)
    assert node_a._claim(run)
    with engine.begin() as conn:
        conn.execute(update(schema.rotation_runs).values(owner_expires_at=time.time() - 1))
    assert node_b._claim(run)
    assert not node_a._claim(run)


def test_a_cancelled_or_replaced_run_is_not_claimed(engine: Engine) -> None:
    node = rotation_engine(engine)
    run = _queued(engine, node)
    node.cancel("secret-1")
    assert not node._claim(run)
    assert node.start("secret-1", "token-3", time.time())
    assert not node._claim(run), "the claim names the run's token"
    assert node.in_progress("secret-1") == "token-3"


def test_of_two_starts_the_second_writes_nothing_not_even_its_configuration(engine: Engine) -> None:
    """RotateSecret writes its configuration with the start: a call that loses the race to start (both
    passed the handler's checks) leaves the winner's configuration and no version of its token."""
    node = rotation_engine(engine)
    _queued(engine, node)  # token-1 queued (with no configuration)
    later = {
        "rotation_lambda_arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:other",
        "last_changed_at": 1.0,
    }
    assert not node.start("secret-1", "token-2", time.time(), configure=later)
    with engine.connect() as conn:
        secret = conn.execute(select(schema.sm_secrets)).one()
        versions = conn.execute(select(schema.sm_versions.c.version_id)).scalars().all()
    assert secret.rotation_lambda_arn is None and secret.last_changed_at != 1.0
    assert versions == ["token-1"]


def test_a_start_configures_the_secret_in_its_transaction_and_refuses_a_deleted_one(engine: Engine) -> None:
    node = rotation_engine(engine)
    run = _queued(engine, node)
    node.cancel("secret-1")
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator"
    assert node.start("secret-1", "token-3", time.time(), configure={"rotation_lambda_arn": arn})
    with engine.connect() as conn:
        assert conn.execute(select(schema.sm_secrets.c.rotation_lambda_arn)).scalar() == arn
    node.cancel("secret-1")
    with engine.begin() as conn:
        for table in (schema.sm_stages, schema.sm_versions, schema.sm_secrets):
            conn.execute(delete(table))
    with pytest.raises(AWSError) as caught:
        node.start(run.secret_id, "token-4", time.time())
    assert caught.value.code == "ResourceNotFoundException"


def test_an_http_function_needs_no_role(engine: Engine) -> None:
    """An HTTP endpoint calls Khoa back with credentials of its own; it gets none from the engine."""
    register(engine, kind="http", target="https://rotator.internal/step")
    function = functions.lookup(engine, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:rotator")
    assert function is not None
    assert rotation_engine(engine)._credentials(function, datetime.now(UTC)) is None


# -- collaborators -----------------------------------------------------------------------------------------
STEPS_SEEN: list[str] = []


def recording_step(event: dict[str, Any], client: Any) -> None:
    """A rotation function that calls nothing back: it only notes the step it was asked to run."""
    STEPS_SEEN.append(event["Step"])


def _secret_with_function(engine: Engine, target: str) -> None:
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


def test_settings_give_the_callback_endpoint() -> None:
    """Functions call this server back over loopback when it listens on every address."""
    every = Settings.from_env({}, host="0.0.0.0", port=9555, dev=True)
    assert RotationSettings.from_settings(every) == RotationSettings("http://127.0.0.1:9555", dev=True)
    tls = Settings.from_env({}, host="khoa.example", port=443, tls_cert="/etc/khoa/cert.pem")
    assert RotationSettings.from_settings(tls) == RotationSettings("https://khoa.example:443", dev=False)


def test_a_successful_run_is_audited_and_clears_the_run(engine: Engine) -> None:
    STEPS_SEEN.clear()
    _secret_with_function(engine, "tests.unit.test_rotation_engine:recording_step")
    node = rotation_engine(engine, dev=True)
    assert node.start("secret-1", "token-1", time.time())
    outcomes = node.run_due(datetime.now(UTC))
    assert [(o.succeeded, o.error) for o in outcomes] == [(True, "")]
    assert STEPS_SEEN == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    assert node.in_progress("secret-1") is None
    assert node.succeeded == 1
    assert isinstance(node.audit, Audit)
    assert [e.event_name for e in node.audit.events] == ["RotationSucceeded"]
    with engine.connect() as conn:
        stages = conn.execute(select(schema.sm_stages.c.stage)).scalars().all()
    assert "AWSPENDING" not in stages, "AWSPENDING leaves the version once the rotation finished"


def test_a_failed_run_is_audited_and_retried_later(engine: Engine) -> None:
    _secret_with_function(engine, "tests.support.rotators:no_such_function")
    node = rotation_engine(engine, dev=True)
    assert node.start("secret-1", "token-1", time.time())
    now = datetime.now(UTC)
    [outcome] = node.run_due(now)
    assert not outcome.succeeded
    assert "not a callable" in outcome.error
    assert node.failed == 1
    assert isinstance(node.audit, Audit)
    assert [e.event_name for e in node.audit.events] == ["RotationFailed"]
    with engine.connect() as conn:
        run = conn.execute(select(schema.rotation_runs)).one()
    assert (run.step, run.attempts, run.owner) == ("createSecret", 1, None)
    assert run.next_attempt_at > now.timestamp(), "retried with backoff, not at once"
    assert node.run_due(now) == [], "not due again before its backoff"
