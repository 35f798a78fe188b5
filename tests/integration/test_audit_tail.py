"""``khoa audit tail``: the trail, one readable line per event, for operators."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.server import ACCOUNT_ID, KhoaServer


def khoa(server: KhoaServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khoa", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env(),
    )


@pytest.fixture
def busy(fresh_server: KhoaServer) -> KhoaServer:
    server = fresh_server.start()
    kms = server.client("kms")
    key = kms.create_key(Description="tail")["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"x")
    with pytest.raises(ClientError):
        kms.describe_key(KeyId="alias/missing")
    server.client("secretsmanager").create_secret(Name="tail-secret", SecretString="s")
    return server


def test_tail_prints_one_line_per_event(busy: KhoaServer) -> None:
    done = khoa(busy, "tail", "--data-dir", str(busy.data_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    create, encrypt, missing, secret = lines
    for line in lines:
        assert line.startswith("20") and f"  {ACCOUNT_ID}  root " in line
    assert "kms:CreateKey  OK  arn:aws:kms:us-east-1:" in create
    assert "kms:Encrypt  OK" in encrypt
    assert "kms:DescribeKey  NotFoundException" in missing
    assert "secretsmanager:CreateSecret  OK  arn:aws:secretsmanager:" in secret

    assert khoa(busy, "tail", "-n", "2", "--data-dir", str(busy.data_dir)).stdout.splitlines() == lines[2:]
    # --filter matches the record (any case) or the line.
    filtered = khoa(busy, "tail", "--filter", "notfoundEXCEPTION", "--data-dir", str(busy.data_dir))
    assert filtered.stdout.splitlines() == [missing]
    by_field = khoa(busy, "tail", "--filter", '"description":"tail"', "--data-dir", str(busy.data_dir))
    assert by_field.stdout.splitlines() == [create]
    url = f"sqlite:///{busy.data_dir / 'khoa.db'}"
    assert khoa(busy, "tail", "--database-url", url).stdout.splitlines() == lines


def test_tail_follow_prints_new_events_with_their_outcome(busy: KhoaServer) -> None:
    args = [sys.executable, "-m", "khoa", "audit", "tail", "-f", "-n", "1", "--interval", "0.2"]
    process = subprocess.Popen(
        [*args, "--filter", "kms", "--data-dir", str(busy.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**busy.env(), "COLUMNS": "80"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()

    def next_line() -> str:
        return lines.get(timeout=20)

    try:
        assert "kms:DescribeKey  NotFoundException" in next_line()
        kms = busy.client("kms")
        key = kms.create_key(Description="followed")["KeyMetadata"]
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
        busy.client("ssm").put_parameter(Name="/tail/param", Value="v", Type="String")  # filtered out
        with pytest.raises(ClientError):
            kms.cancel_key_deletion(KeyId="alias/none")
        assert f"kms:CreateKey  OK  {key['Arn']}" in next_line()
        scheduled = next_line()
        assert "kms:ScheduleKeyDeletion  OK" in scheduled
        assert len(scheduled) > 80  # one line per event, however narrow the terminal
        assert "kms:CancelKeyDeletion  NotFoundException" in next_line()
        time.sleep(0.5)
        assert lines.empty()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tail_reports_an_unreadable_trail(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "audit", "tail", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("KHOA_")},
    )
    assert done.returncode == 1
    assert "cannot read the audit trail" in done.stderr
