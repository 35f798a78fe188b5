"""Exactly one node runs a rotation: two server processes on one PostgreSQL database (the second with
the first one's root key), both asked to run their jobs at once, again and again.

- a scheduled rotation coming due happens once: each step invoked once, by one process;
- a pass that outlives the jobs lease can no longer write (fencing): it records nothing more of the
  run it was running, and the next leader resumes that run at its recorded step.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.conftest import _new_postgres_database
from tests.support.rotation import holder, register, stages_of, wait_for
from tests.support.server import KhoaServer

pytestmark = pytest.mark.postgres


# The jobs lease (and so a rotation's claim) lives 3 s instead of 6: the run a pass abandoned is
# resumed once its claim runs out, and a heartbeat (every third of the lease) takes a freed lease.
LEASE_SECONDS = "3"


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin: Any
) -> Iterator[tuple[KhoaServer, KhoaServer]]:
    """Two nodes on one database of their own, shared by this module's tests (each test rotates
    secrets of its own; the lease a test takes away is given back before it ends)."""
    base = tmp_path_factory.mktemp("rotation-cluster")
    with _new_postgres_database(postgres_admin, "khoa_cluster") as url:
        (base / "node-a").mkdir()
        extra = {"KHOA_JOB_LEASE_SECONDS": LEASE_SECONDS}
        first = KhoaServer(base / "node-a" / "data", database_url=url, extra_env=extra).start()
        second_dir = base / "node-b" / "data"
        second_dir.mkdir(parents=True)
        shutil.copy2(first.data_dir / "root.key", second_dir / "root.key")
        second = KhoaServer(second_dir, database_url=url, extra_env=extra)
        try:
            second.start()
            yield first, second
        finally:
            second.stop()
            first.stop()


def _both_run_jobs(servers: tuple[KhoaServer, ...], rounds: int = 3) -> list[int]:
    """Every node runs its jobs at the same moment, ``rounds`` times; how many jobs each pass ran."""
    ran: list[int] = []
    lock = threading.Lock()

    def run(server: KhoaServer) -> None:
        count = server.run_jobs()
        with lock:
            ran.append(count)

    for _ in range(rounds):
        threads = [threading.Thread(target=run, args=(s,)) for s in servers for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    return ran


def _invocations(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def _leads(node: KhoaServer) -> bool:
    """Whether ``/_khoa/ready`` (200 or 503) says this node leads the background work."""
    try:
        with urllib.request.urlopen(f"{node.endpoint}/_khoa/ready", timeout=5) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    return body.get("leader") is True


def _log_since(server: KhoaServer, offset: int) -> str:
    with server.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@pytest.fixture(scope="module")
def function(nodes: tuple[KhoaServer, KhoaServer]) -> str:
    """The rotation function, steered by each secret's tags (registered once: the nodes share it)."""
    return register(nodes[0], f"recorded-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled")


def _setup(server: KhoaServer, function: str, record: Path, **extra_tags: str) -> tuple[Any, str, str]:
    sm = server.client("secretsmanager")
    tags = {"record": str(record), **extra_tags}
    name = f"cluster/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(
        Name=name, SecretString='{"password": "v0"}', Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 1},
        RotateImmediately=False,
    )
    return sm, name, first


def test_a_scheduled_rotation_happens_once(
    nodes: tuple[KhoaServer, KhoaServer], function: str, tmp_path: Path
) -> None:
    a, b = nodes
    record = tmp_path / "invocations"
    _, name, first = _setup(a, function, record)
    for node in nodes:
        node.advance_clock(3 * 86400)
    ran = _both_run_jobs(nodes)
    assert any(ran), ran

    calls = _invocations(record)
    assert [step for _, step, _ in calls] == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    assert len({pid for pid, _, _ in calls}) == 1, "steps ran in more than one process"
    assert len({token for _, _, token in calls}) == 1
    stages = stages_of(b.client("secretsmanager"), name)
    assert holder(stages, "AWSCURRENT") == calls[0][2] and holder(stages, "AWSPREVIOUS") == first
    assert holder(stages, "AWSPENDING") is None
    assert len(stages) == 2, "one rotation makes exactly one new version"


def test_a_pass_outliving_the_lease_writes_nothing_more(
    nodes: tuple[KhoaServer, KhoaServer], function: str, tmp_path: Path
) -> None:
    """Fencing: node A's pass outlives its lease (another holder has it) while a step runs. The step
    ends, but A records nothing more of the run; once the lease is free again the leader resumes the
    run at its recorded step and completes it exactly once."""
    a = nodes[0]
    record = tmp_path / "invocations"
    hold = tmp_path / "hold"
    finished = tmp_path / "finished"
    hold.touch()
    sm, name, first = _setup(a, function, record, hold=f"before:{hold}", finished=str(finished))
    arn = sm.describe_secret(SecretId=name)["ARN"]
    leader = next(node for node in nodes if node.run_jobs() > 0)
    token = leader.client("secretsmanager").rotate_secret(SecretId=name)["VersionId"]
    wait_for(lambda: Path(f"{hold}.entered").exists(), seconds=15)
    offset = leader.log_path.stat().st_size

    # the lease passes to a holder that is neither node (as if A had been paused past its lease)
    engine = create_database_engine(a.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(schema.leases).values(holder="elsewhere", expires_at=time.time() + 3600))
        hold.unlink()  # A's finishSecret goes on and moves AWSCURRENT...
        wait_for(finished.exists, seconds=15)
        # ...but A writes nothing more: its engine gives the run up (the next write it tries, renewing
        # its claim or recording the step, is refused by the fence) and the run stays, at finishSecret
        abandoned = f"rotation of {arn} abandoned at finishSecret"
        wait_for(lambda: abandoned in _log_since(leader, offset), seconds=15)
        # and every node's heartbeat has seen the lease go (so taking it back starts a pass)
        wait_for(lambda: not any(_leads(node) for node in nodes), seconds=15)
        with engine.connect() as conn:
            run = conn.execute(select(schema.rotation_runs)).one()
        assert run.step == "finishSecret" and run.token == token
        stages = stages_of(sm, name)
        assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPENDING") == token

        with engine.begin() as conn:  # the holder goes away: a node's heartbeat takes the lease
            conn.execute(update(schema.leases).values(expires_at=0.0))
    finally:
        engine.dispose()
    wait_for(lambda: holder(stages_of(sm, name), "AWSPENDING") is None, seconds=20)
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPREVIOUS") == first
    assert len(stages) == 2, "one rotation makes exactly one new version"
    steps = [step for _, step, _ in _invocations(record)]
    assert steps[:4] == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    assert steps[4:] == ["finishSecret"], "resumed at its recorded step, once"
