"""Exactly one node runs a rotation: two server processes on one PostgreSQL database (the second with
the first one's root key), both asked to run their jobs at once, again and again.

- a scheduled rotation coming due happens once: each step invoked once, by one process;
- a pass that outlives the jobs lease (another node becomes leader meanwhile) still keeps the rotation
  to itself: the run is claimed, so the new leader skips it instead of running the steps again.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.rotation import holder, register, rotate_now, stages_of, wait_for
from tests.support.server import KhoaServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def nodes(tmp_path: Path, private_postgres: str) -> Iterator[tuple[KhoaServer, KhoaServer]]:
    (tmp_path / "node-a").mkdir()
    first = KhoaServer(tmp_path / "node-a" / "data", database_url=private_postgres).start()
    second_dir = tmp_path / "node-b" / "data"
    second_dir.mkdir(parents=True)
    shutil.copy2(first.data_dir / "root.key", second_dir / "root.key")
    second = KhoaServer(second_dir, database_url=private_postgres)
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


def _setup(server: KhoaServer, record: Path, **extra_tags: str) -> tuple[Any, str, str]:
    sm = server.client("secretsmanager")
    function = register(server, f"recorded-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled")
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


def test_a_scheduled_rotation_happens_once(nodes: tuple[KhoaServer, KhoaServer], tmp_path: Path) -> None:
    a, b = nodes
    record = tmp_path / "invocations"
    _, name, first = _setup(a, record)
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


def test_a_pass_outliving_the_lease_keeps_its_rotation(
    nodes: tuple[KhoaServer, KhoaServer], tmp_path: Path
) -> None:
    a, b = nodes
    record = tmp_path / "invocations"
    hold = tmp_path / "hold"
    hold.touch()
    sm, name, first = _setup(a, record, hold=f"before:{hold}")
    # take the lease on node A, then start the rotation there: its pass waits in finishSecret
    assert a.run_jobs() > 0
    token = sm.rotate_secret(SecretId=name)["VersionId"]
    wait_for(lambda: Path(f"{hold}.entered").exists(), seconds=15)

    # the pass outlives the 30-second lease: node B becomes the leader and runs its passes
    engine = create_database_engine(a.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(schema.leases).values(expires_at=0.0))
    finally:
        engine.dispose()
    assert b.run_jobs() > 0, "node B did not take over the lease"
    b.advance_clock(3600)
    assert b.run_jobs() > 0
    assert [step for _, step, _ in _invocations(record)] == [
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
    ], "node B ran steps of a rotation node A was running"

    hold.unlink()  # node A's finishSecret goes on and completes the rotation
    wait_for(lambda: holder(stages_of(sm, name), "AWSPENDING") is None, seconds=15)
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPREVIOUS") == first
    pids = {pid for pid, _, _ in _invocations(record)}
    assert len(pids) == 1 and str(a.process.pid if a.process else "") in pids
    assert rotate_now(b, b.client("secretsmanager"), name)  # the next one runs (on B, the leader now)
