"""Failover of background work: three nodes on one PostgreSQL database, the leader killed with -9.

Exactly one node leads (``"leader": true`` in ``/_khoa/ready``, ``khoa_leader 1`` in ``/metrics``).
The leader is killed in the middle of a rotation's finishSecret, under a light read load on the other
nodes; then, measured from the kill:

- another node leads and runs due work (a rotation queued on a survivor right after the kill
  completes) within the issue's 10 s, asserted with room to spare (15 s);
- the interrupted rotation is resumed at its recorded step and completes, once, within 10 s more
  (asserted: 25 s from the kill);
- the survivors answered every read meanwhile;
- the audit trail, delivered in turns by the old and the new leader each to its own directory,
  verifies from every node (the database keeps every delivered file).

The figures are printed (``pytest -s``) as ``failover: ...``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.khoa_cli import run_khoa
from tests.support.rotation import holder, register, stages_of, wait_for
from tests.support.server import KhoaServer

pytestmark = pytest.mark.postgres

NODES = 3


# Passes and delivery every second, so the killed leader and its successor both deliver. The jobs lease
# keeps its default: a shorter one could pass between nodes under a loaded machine before the kill.
NODE_ENV = {"KHOA_JOB_INTERVAL_SECONDS": "1", "KHOA_AUDIT_DELIVERY_SECONDS": "1"}


@pytest.fixture
def cluster(tmp_path: Path, private_postgres: str) -> Iterator[list[KhoaServer]]:
    """Three nodes sharing one database and one root key (as every node of a cluster must)."""
    nodes: list[KhoaServer] = []
    try:
        for index in range(NODES):
            data = tmp_path / f"node-{index}" / "data"
            data.mkdir(parents=True)
            nodes.append(KhoaServer(data, database_url=private_postgres, extra_env=NODE_ENV))
        first = nodes[0].start()  # makes the root key and the schema, and leads
        # A call at once, so that the trail has an event the leader's passes see from now on: the
        # leader delivers only events it saw pending 10 s before (khoa.audit.trail), and that wait
        # then runs while the other nodes start.
        first.client("secretsmanager").list_secrets()
        for node in nodes[1:]:
            shutil.copy2(first.data_dir / "root.key", node.data_dir / "root.key")
        with ThreadPoolExecutor(NODES - 1) as starting:  # the others at once
            list(starting.map(KhoaServer.start, nodes[1:]))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def ready(node: KhoaServer) -> dict[str, Any]:
    """``/_khoa/ready``'s body, whether it answers 200 or 503."""
    try:
        with urllib.request.urlopen(f"{node.endpoint}/_khoa/ready", timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    return body


def leader_metric(node: KhoaServer) -> float:
    with urllib.request.urlopen(f"{node.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    [line] = [line for line in text.splitlines() if line.startswith("khoa_leader ")]
    return float(line.split()[1])


def leaders(nodes: list[KhoaServer]) -> list[KhoaServer]:
    return [node for node in nodes if ready(node).get("leader") is True]


def _secret(node: KhoaServer, function: str, tags: dict[str, str]) -> tuple[str, str]:
    """A secret rotated by ``function`` (not yet rotated); its name and first version."""
    sm = node.client("secretsmanager")
    name = f"failover/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(
        Name=name,
        SecretString='{"password": "v0"}',
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    return name, first


def test_killing_the_leader_hands_background_work_over(cluster: list[KhoaServer], tmp_path: Path) -> None:
    current = wait_for(lambda: leaders(cluster), seconds=15)
    assert len(current) == 1, "more than one node leads"
    leader = current[0]
    survivors = [node for node in cluster if node is not leader]
    assert leader_metric(leader) == 1.0
    assert [leader_metric(node) for node in survivors] == [0.0, 0.0]

    function = register(leader, f"failover-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled")
    record, hold = tmp_path / "invocations", tmp_path / "hold"
    hold.touch()
    interrupted, first = _secret(leader, function, {"record": str(record), "hold": f"after:{hold}"})
    queued, _ = _secret(leader, function, {})
    interrupted_token = leader.client("secretsmanager").rotate_secret(SecretId=interrupted)["VersionId"]
    wait_for(lambda: Path(f"{hold}.entered").exists(), seconds=15)  # in finishSecret, AWSCURRENT moved
    # Delivered once noted 10 s ago (khoa.audit.trail: events settle before delivery).
    wait_for(lambda: _log_files(leader), seconds=30)  # the leader has delivered to its own disk

    stop = threading.Event()
    failures: list[str] = []

    def load(node: KhoaServer) -> None:
        sm = node.client("secretsmanager")
        while not stop.is_set():
            try:
                sm.get_secret_value(SecretId=queued)
            except Exception as exc:  # noqa: BLE001 - counted, reported by the assertion below
                failures.append(type(exc).__name__)
            time.sleep(0.02)

    readers = [threading.Thread(target=load, args=(node,), daemon=True) for node in survivors]
    for reader in readers:
        reader.start()
    try:
        killed = time.monotonic()
        leader.kill9()
        hold.unlink()
        sm = survivors[0].client("secretsmanager")
        queued_token = sm.rotate_secret(SecretId=queued)["VersionId"]  # due work, queued after the kill

        took_over = worked = resumed = None
        deadline = killed + 40
        while time.monotonic() < deadline and None in (took_over, worked, resumed):
            now = time.monotonic() - killed
            if took_over is None and leaders(survivors):
                took_over = now
            if worked is None and holder(stages_of(sm, queued), "AWSCURRENT") == queued_token:
                worked = now
            if resumed is None and holder(stages_of(sm, interrupted), "AWSPENDING") is None:
                resumed = now
            time.sleep(0.1)
    finally:
        stop.set()
        for reader in readers:
            reader.join(5)
    print(  # the measured figures, shown with pytest -s
        f"failover: leader after {took_over} s, due work done after {worked} s, "
        f"interrupted rotation done after {resumed} s"
    )
    assert took_over is not None and took_over < 12, took_over
    assert worked is not None and worked < 15, worked
    assert resumed is not None and resumed < 25, resumed
    assert failures == [], "a surviving node failed reads during the failover"

    assert len(leaders(survivors)) == 1
    stages = stages_of(sm, interrupted)
    assert holder(stages, "AWSCURRENT") == interrupted_token and holder(stages, "AWSPREVIOUS") == first
    assert len(stages) == 2, "the interrupted rotation made exactly one new version"
    steps = [line.split()[1] for line in record.read_text().splitlines()]
    assert steps == ["createSecret", "setSecret", "testSecret", "finishSecret", "finishSecret"], steps

    # The trail: files on two nodes' disks, the whole of it verifiable from each of the three.
    wait_for(lambda: _log_files(leaders(survivors)[0]), seconds=30)
    assert sum(1 for node in cluster if _log_files(node)) >= 2
    env = survivors[0].env()
    digest = run_khoa(env, "audit", "digest", *_installation(survivors[0]))
    assert digest.returncode == 0, digest.stderr
    # ``khoa audit export`` gathers every node's files in one directory, where they verify as a
    # single node's directory does (every file present). It and the three verifications only read the
    # trail, so they run side by side.
    exported = tmp_path / "exported"
    with ThreadPoolExecutor(NODES + 1) as commands:
        verifying = [commands.submit(run_khoa, env, "audit", "verify", *_installation(n)) for n in cluster]
        exporting = commands.submit(
            run_khoa, env, "audit", "export", "--out", str(exported), *_installation(leader)
        )
    for running in verifying:
        verified = running.result()
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "The trail is intact." in verified.stdout
    result = exporting.result()
    assert result.returncode == 0, result.stderr
    for node in cluster:
        assert {p.relative_to(node.data_dir / "audit") for p in _log_files(node)} <= {
            p.relative_to(exported) for p in exported.rglob("*.json.gz")
        }


def _log_files(node: KhoaServer) -> list[Path]:
    return sorted((node.data_dir / "audit" / "AWSLogs").rglob("CloudTrail/*/*/*/*/*.json.gz"))


def _installation(node: KhoaServer) -> list[str]:
    return ["--data-dir", str(node.data_dir), "--database-url", node.database_url or ""]
