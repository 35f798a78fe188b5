"""``khoa audit tail``: the trail, one readable line per event, for operators."""

from __future__ import annotations

import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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


@dataclass
class Busy:
    server: KhoaServer  # the running server, after four calls
    snapshot: Path  # a copy of its data directory as it was then


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Busy]:
    """One server for the module, after four calls, and a copy of its data directory taken then (for
    the test that counts every event: another test adds events to the server)."""
    base = tmp_path_factory.mktemp("busy")
    server = KhoaServer(base / "data").start()
    try:
        kms = server.client("kms")
        key = kms.create_key(Description="tail")["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"x")
        with pytest.raises(ClientError):
            kms.describe_key(KeyId="alias/missing")
        server.client("secretsmanager").create_secret(Name="tail-secret", SecretString="s")
        yield Busy(server, snapshot(server.data_dir, base / "snapshot"))
    finally:
        server.stop()


def snapshot(data_dir: Path, to: Path) -> Path:
    """A copy of a running server's data directory, its SQLite database copied consistently."""
    shutil.copytree(data_dir, to, ignore=shutil.ignore_patterns("khoa.db*"))
    live, copy = sqlite3.connect(data_dir / "khoa.db"), sqlite3.connect(to / "khoa.db")
    try:
        live.backup(copy)
    finally:
        live.close()
        copy.close()
    return to


def test_tail_prints_one_line_per_event(busy: Busy) -> None:
    data_dir = str(busy.snapshot)
    url = f"sqlite:///{busy.snapshot / 'khoa.db'}"
    with ThreadPoolExecutor(max_workers=5) as pool:  # five reads of one trail, at once
        done, last_two, filtered, by_field, by_url = pool.map(
            lambda args: khoa(busy.server, "tail", *args),
            [
                ("--data-dir", data_dir),
                ("-n", "2", "--data-dir", data_dir),
                ("--filter", "notfoundEXCEPTION", "--data-dir", data_dir),
                ("--filter", '"description":"tail"', "--data-dir", data_dir),
                ("--database-url", url),
            ],
        )
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

    assert last_two.stdout.splitlines() == lines[2:]
    # --filter matches the record (any case) or the line.
    assert filtered.stdout.splitlines() == [missing]
    assert by_field.stdout.splitlines() == [create]
    assert by_url.stdout.splitlines() == lines


def test_tail_follows_new_events_and_never_sends_a_callers_control_characters_to_the_terminal(
    busy: Busy,
) -> None:
    """Two checks that add events to the module's server, in this order: following starts from its
    newest kms event (the module's DescribeKey), and the second adds kms-like records of its own."""
    _tail_follow_prints_new_events_with_their_outcome(busy.server)
    _tail_never_sends_a_callers_control_characters_to_the_terminal(busy.server)


def _tail_follow_prints_new_events_with_their_outcome(server: KhoaServer) -> None:
    args = [sys.executable, "-m", "khoa", "audit", "tail", "-f", "-n", "1", "--interval", "0.2"]
    process = subprocess.Popen(
        [*args, "--filter", "kms", "--data-dir", str(server.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**server.env(), "COLUMNS": "80"},
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
        kms = server.client("kms")
        key = kms.create_key(Description="followed")["KeyMetadata"]
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
        server.client("ssm").put_parameter(Name="/tail/param", Value="v", Type="String")  # filtered out
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


def refusals_recorded(server: KhoaServer, count: int, seconds: float = 10.0) -> None:
    """Wait until ``count`` refused GetCallerIdentity calls are in the trail (a refusal's record may
    be committed after its answer)."""
    deadline = time.monotonic() + seconds
    while True:
        with sqlite3.connect(server.data_dir / "khoa.db") as db:
            found = db.execute(
                "SELECT count(*) FROM audit_events WHERE event_name LIKE '%GetCallerIdentity'"
            ).fetchone()[0]
        if found >= count:
            return
        assert time.monotonic() < deadline, f"{found} of {count} refusals recorded"
        time.sleep(0.05)


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


def _tail_never_sends_a_callers_control_characters_to_the_terminal(server: KhoaServer) -> None:
    """An unauthenticated caller chose the access key id (a presigned URL's X-Amz-Credential is
    percent-decoded) and the operation name (a query API's Action) of a refused call; neither may
    carry an escape sequence to the operator's terminal (erase lines above, hide text, set the title)."""
    erase = "\x1b[1A\x1b[2K" * 3 + "\x1b[8m"
    query = urllib.parse.urlencode(
        {
            "Action": "GetCallerIdentity",
            "Version": "2011-06-15",
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": erase + "AKIA/20250101/us-east-1/sts/aws4_request",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "X-Amz-Expires": "60",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": "0" * 64,
        }
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.endpoint}/?{query}", timeout=10)
    assert refused.value.code == 403
    form = urllib.parse.urlencode({"Action": erase + "GetCallerIdentity", "Version": "2011-06-15"}).encode()
    request = urllib.request.Request(
        server.endpoint, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10)
    # A database writer can put anything in any field; tail shows it escaped all the same.
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        row = db.execute("SELECT * FROM audit_events WHERE event_name = 'CreateKey'").fetchone()
        columns = [c[1] for c in db.execute("PRAGMA table_info(audit_events)")]
        values = dict(zip(columns, row, strict=True))
        record = json.loads(values["record"])
        record.update(
            {
                "eventTime": "2026\x1b]0;owned\x07",
                "recipientAccountId": "1111\x9b2J",
                "eventSource": "kms\u202e.amazonaws.com",
                "errorCode": "Denied\x1b[8m",
                "resources": [{"ARN": "arn:\x1b[2Kkey", "type": "AWS::KMS::Key", "accountId": ACCOUNT_ID}],
                "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/r/\x1b[1A"},
            }
        )
        values.update(seq=None, event_id=str(uuid.uuid4()), record=json.dumps(record))
        db.execute(
            f"INSERT INTO audit_events ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()),
        )

    refusals_recorded(server, 2)
    done = khoa(server, "tail", "-n", "50", "--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    assert not any(c in done.stdout for c in "\x1b\x07\x9b\u202e"), repr(done.stdout)
    lines = done.stdout.splitlines()
    refusal = next(line for line in lines if "sts:GetCallerIdentity" in line)
    assert "  unknown  " in refusal  # the claimed key id is not one: none is recorded
    assert any("sts:\\x1b[1A\\x1b[2K" in line for line in lines)  # the Action, escaped
    forged = next(line for line in lines if "Denied" in line)
    for shown in (
        "2026\\x1b]0;owned\\x07",
        "1111\\x9b2J",
        "kms\\u202e:",
        "Denied\\x1b[8m",
        "arn:\\x1b[2Kkey",
        "r/\\x1b[1A",
    ):
        assert shown in forged, forged
    # The trail itself records no claimed key id that is not one.
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetCallerIdentity"}]
    )["Events"]
    identities = [json.loads(e["CloudTrailEvent"])["userIdentity"] for e in events]
    assert identities and all("accessKeyId" not in identity for identity in identities)
