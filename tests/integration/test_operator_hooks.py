"""Operator-facing hooks outside ``--dev`` (issue 11, finding 8 and 11b).

The clock and job hooks used to be served by any server started with ``KHOA_TEST_CLOCK=1``, without
authentication: advancing the clock 31 days and running jobs destroyed a key pending deletion. They
now exist only in ``--dev``; the test suite moves time through its own harness instead
(tests/support/hooks), which a product server does not load.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.server import KhoaServer

DAY = 86400


@pytest.fixture
def product_server(tmp_path: Path) -> Iterator[KhoaServer]:
    """Started as an operator would, with the old test-clock switch set and no test harness."""
    instance = KhoaServer(tmp_path / "data", harness=False, extra_env={"KHOA_TEST_CLOCK": "1"}).start()
    yield instance
    instance.stop()


def _post(server: KhoaServer, path: str, payload: dict[str, float] | None = None) -> int:
    request = urllib.request.Request(
        f"{server.endpoint}{path}", data=json.dumps(payload or {}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_clock_and_job_hooks_do_not_exist_outside_dev(product_server: KhoaServer) -> None:
    kms = product_server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    assert _post(product_server, "/_khoa/clock/advance", {"seconds": 31 * DAY}) == 404
    assert _post(product_server, "/_khoa/jobs/run") == 404
    # Nor the harness's paths: the product does not know them (they are unsigned AWS API calls to it).
    assert _post(product_server, "/_test/clock/advance", {"seconds": 31 * DAY}) == 403
    assert _post(product_server, "/_test/jobs/run") == 403

    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    log = product_server.log_path.read_text(errors="replace")
    assert "KHOA_TEST_CLOCK is ignored" in log


def test_the_harness_clock_destroys_due_keys(fresh_server: KhoaServer) -> None:
    """The same scenario through the test harness: the in-process clock does move, and jobs run."""
    fresh_server.start()
    kms = fresh_server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    before = fresh_server.clock_now()
    fresh_server.advance_clock(8 * DAY)
    assert (fresh_server.clock_now() - before).total_seconds() >= 8 * DAY
    assert fresh_server.run_jobs() > 0
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=key_id)


def test_the_harness_clock_is_shared_by_worker_processes(tmp_path: Path) -> None:
    """With --workers 2 each worker has its own Clock object; the harness keeps them on one offset."""
    instance = KhoaServer(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        instance.advance_clock(5 * DAY)
        # Requests land on either worker; every answer must show the advanced clock.
        nows = [instance.clock_now() for _ in range(12)]
        kms = instance.client("kms")
        created = [kms.create_key()["KeyMetadata"]["CreationDate"] for _ in range(6)]
        assert all((now - nows[0]).total_seconds() < 600 for now in nows)
        assert all((created_at - nows[0]).total_seconds() > -600 for created_at in created)
        assert all((created_at - datetime.now(UTC)).total_seconds() > 4 * DAY for created_at in created)
    finally:
        instance.stop()


def _start_exit(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    instance = KhoaServer(tmp_path / "data", extra_env=extra_env, harness=False)
    args = ["server", "--port", str(instance.port), "--data-dir", str(tmp_path / "data")]
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args], env=instance.env(), capture_output=True, text=True, timeout=60
    )


def test_audit_off_is_refused_outside_dev(tmp_path: Path) -> None:
    result = _start_exit(tmp_path, {"KHOA_AUDIT": "0"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "KHOA_AUDIT=0 is allowed only with --dev" in lines[0]


def test_audit_off_is_allowed_in_dev(tmp_path: Path) -> None:
    instance = KhoaServer(tmp_path / "data", dev=True, extra_env={"KHOA_AUDIT": "0"}).start()
    try:
        instance.client("kms").create_key()
        with sqlite3.connect(instance.data_dir / "khoa.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0] == 0
    finally:
        instance.stop()
