"""An audit directory that cannot be written shows: ``/_khoa/ready`` says 503 with the reason, the
``khoa_audit_delivery_failing`` metric is 1, the ``audit-delivery-failing`` alert is raised; and all of
it clears once the directory can be written again.

Tests run as root, whom permissions do not stop, so the directory is made unwritable by putting a
file where it should be (every write under it then fails with ENOTDIR, whoever the writer is).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from khoa.audit.outcomes import PENDING_KEY, UNKNOWN_CODE, Writer
from khoa.client.leaks import leaks_client
from tests.integration.test_audit_metrics import scrape
from tests.integration.test_cloudtrail import lookup
from tests.support.rotation import register, wait_for
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer


def ready(server: KhoaServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{server.endpoint}/_khoa/ready", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(server: KhoaServer, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """Poll readiness until it answers ``status`` (its write probe is reused for a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = ready(server)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        time.sleep(0.1)


def alerts(server: KhoaServer) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "alerts", "list", "--json", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env=server.env(),
    )
    return list(json.loads(done.stdout))


def test_unwritable_audit_directory_is_signalled_and_recovers(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    audit_dir = tmp_path / "trail"
    fresh_server.extra_env["KHOA_AUDIT_DIR"] = str(audit_dir)
    server = fresh_server.start()
    wait_ready(server, 200)
    assert scrape(server)["khoa_audit_delivery_failing"] == 0
    server.client("secretsmanager").create_secret(Name="signals", SecretString="s3cr3t-value")

    # A file where the directory should be.
    aside = tmp_path / "trail-aside"
    audit_dir.rename(aside)
    audit_dir.write_text("not a directory")

    body = wait_ready(server, 503)
    assert body["audit"] == "delivery-failing"
    assert str(audit_dir) in body["reason"] and "not writable" in body["reason"]
    # Calls are still served and recorded in the database: only the files wait.
    assert server.client("secretsmanager").get_secret_value(SecretId="signals")["SecretString"]
    samples = scrape(server)
    assert samples["khoa_audit_delivery_failing"] == 1
    assert samples["khoa_audit_delivery_errors_total"] >= 1

    server.run_jobs()  # the leader's pass: delivery fails, the alert rule sees it
    raised = [a for a in alerts(server) if a["rule"] == "audit-delivery-failing"]
    assert len(raised) == 1, raised
    assert raised[0]["severity"] == "critical"
    assert "not writable" in raised[0]["details"]["reason"]
    assert "s3cr3t-value" not in json.dumps(raised)
    server.run_jobs()  # still failing: the cooldown keeps it to one alert
    assert len([a for a in alerts(server) if a["rule"] == "audit-delivery-failing"]) == 1

    # Writable again: ready, metric back to 0, delivery works.
    audit_dir.unlink()
    aside.rename(audit_dir)
    wait_ready(server, 200)
    server.run_jobs()
    assert scrape(server)["khoa_audit_delivery_failing"] == 0
    assert ready(server)[0] == 200
    log = server.log_path.read_text(errors="replace")
    assert log.count("Traceback") <= 2  # failures are logged once per interval, not per pass


def _a_call_cut_off_by_a_crash_reads_as_outcome_unknown_after_restart(server: KhoaServer) -> str:
    """A write's first record (made before it ran) whose process died is marked when the node starts
    again: LookupEvents shows ``Khoa.OutcomeUnknown`` instead of what read like a success. Returns
    the event's id (the test delivers and verifies the trail afterwards)."""
    server.client("secretsmanager").create_secret(Name="cut-off", SecretString="x")
    server.kill9()
    # Make the call's record what a kill -9 between the two records leaves: the first one, marked
    # by a process that is gone.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    writer = Writer(Writer.this_process().host, int(gone.stdout), "deadbeef")
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        event_id, raw = db.execute(
            "SELECT event_id, record FROM audit_events WHERE event_name = 'CreateSecret'"
        ).fetchone()
        record = json.loads(raw)
        record["responseElements"] = None
        record["resources"] = []
        record["additionalEventData"] = {PENDING_KEY: writer.marker}
        db.execute("UPDATE audit_events SET record = ? WHERE event_id = ?", (json.dumps(record), event_id))

    server.start()
    (event,) = lookup(server.client("cloudtrail"), "EventName", "CreateSecret")
    shown = json.loads(event["CloudTrailEvent"])
    assert shown["eventID"] == event_id
    assert shown["errorCode"] == UNKNOWN_CODE
    assert shown["additionalEventData"] == {"outcome": "unknown"}
    return str(event_id)


# -- a write whose outcome is not known yet is never delivered as a success ----------------------
#
# An emergency rotation (EmergencyRotateSecret) runs its function's steps inside the call: with the
# test function told to wait in finishSecret (after moving AWSCURRENT), the call is running - its
# first record, waiting for its outcome, is in the trail - for as long as the test needs.


def _khoa(server: KhoaServer, *args: str) -> subprocess.CompletedProcess[str]:
    installation = ["--data-dir", str(server.data_dir)]
    if server.database_url:
        installation += ["--database-url", server.database_url]
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args, *installation],
        capture_output=True,
        text=True,
        env=server.env(),
        timeout=180,
    )


def _digest_and_verify(server: KhoaServer) -> None:
    """``khoa audit digest`` (delivers what is pending, signs) then ``khoa audit verify``: intact."""
    done = _khoa(server, "audit", "digest")
    assert done.returncode == 0, done.stdout + done.stderr
    verified = _khoa(server, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "The trail is intact." in verified.stdout


def _delivered(directory: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("AWSLogs/*/CloudTrail/**/*.json.gz")):  # not the digests
        records += json.loads(gzip.decompress(path.read_bytes()))["Records"]
    return records


def _emergencies(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["eventName"] == "EmergencyRotateSecret"]


def _held_rotation(server: KhoaServer, hold: Path) -> str:
    """A secret whose rotation function waits in finishSecret while ``hold`` exists; its name."""
    function = register(server, f"held-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled")
    sm = server.client("secretsmanager")
    name = f"outcome/{uuid.uuid4().hex[:8]}"
    sm.create_secret(
        Name=name, SecretString='{"password": "v0"}', Tags=[{"Key": "hold", "Value": f"after:{hold}"}]
    )
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    return name


def _running(server: KhoaServer, name: str, hold: Path) -> tuple[threading.Thread, list[Any]]:
    """EmergencyRotateSecret on ``name``, called on a thread; returns once the call is inside its
    function's finishSecret (the thread's outcome: [result] or [exception])."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION
    )
    config = Config(retries={"max_attempts": 1}, read_timeout=120)
    client = leaks_client(session, server.endpoint, REGION, config)
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(client.emergency_rotate_secret(SecretId=name))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_for(lambda: Path(f"{hold}.entered").exists(), seconds=60)
    return thread, outcome


def _release(hold: Path, thread: threading.Thread) -> None:
    hold.unlink(missing_ok=True)
    thread.join(60)
    assert not thread.is_alive()


def _sqlite_row(server: KhoaServer, event_id: str) -> tuple[dict[str, Any], str | None]:
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        raw, code = db.execute(
            "SELECT record, error_code FROM audit_events WHERE event_id = ?", (event_id,)
        ).fetchone()
    return json.loads(raw), code


def _no_record_waits(records: list[dict[str, Any]]) -> None:
    waiting = [r["eventName"] for r in records if PENDING_KEY in (r.get("additionalEventData") or {})]
    assert waiting == [], f"delivered while still waiting for their outcome: {waiting}"


def test_a_call_cut_off_by_a_crash_is_outcome_unknown_after_a_restart_and_without_one(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    """Both cases of a call cut off by a crash, one after the other on one server (each case costs a
    ``kill -9`` and a restart): one call's record is marked when the node starts again, the other's is
    delivered before it does. The trail, holding both, is delivered and verifies."""
    server = fresh_server.start()
    after_restart = _a_call_cut_off_by_a_crash_reads_as_outcome_unknown_after_restart(server)
    _a_call_cut_off_by_a_crash_is_delivered_as_outcome_unknown_without_a_restart(server, tmp_path)
    # The first call's record reached the signed trail as LookupEvents showed it.
    (delivered,) = [r for r in _delivered(server.data_dir / "audit") if r["eventID"] == after_restart]
    assert delivered["errorCode"] == UNKNOWN_CODE
    assert delivered["additionalEventData"] == {"outcome": "unknown"}


def _a_call_cut_off_by_a_crash_is_delivered_as_outcome_unknown_without_a_restart(
    server: KhoaServer, tmp_path: Path
) -> None:
    """kill -9 in the middle of a call, then ``khoa audit digest`` before the node is started again
    (the restart's sweep never runs): the call's record reaches the signed trail as outcome unknown,
    and its row says the same."""
    hold = tmp_path / "hold"
    hold.touch()
    name = _held_rotation(server, hold)
    thread, _ = _running(server, name, hold)
    server.kill9()  # the call dies with its process
    _release(hold, thread)

    _digest_and_verify(server)
    records = _delivered(server.data_dir / "audit")
    _no_record_waits(records)
    (cut,) = _emergencies(records)
    assert cut["errorCode"] == UNKNOWN_CODE
    assert cut["additionalEventData"] == {"outcome": "unknown"}
    assert _sqlite_row(server, cut["eventID"]) == (cut, UNKNOWN_CODE)  # the database agrees with the file

    server.start()  # and the restart leaves the delivered record alone
    (event,) = lookup(server.client("cloudtrail"), "EventName", "EmergencyRotateSecret")
    assert json.loads(event["CloudTrailEvent"]) == cut
    _digest_and_verify(server)


def test_a_call_still_running_holds_delivery_back_until_its_outcome(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    """While a call runs, delivery stops just before its record: the events recorded after it wait
    too. Once the outcome is in, both are delivered, the call's with its outcome."""
    server = fresh_server.start()
    hold = tmp_path / "hold"
    hold.touch()
    name = _held_rotation(server, hold)
    thread, outcome = _running(server, name, hold)
    try:
        sm = server.client("secretsmanager")
        after = f"outcome/after-{uuid.uuid4().hex[:8]}"
        sm.create_secret(Name=after, SecretString="recorded after the running call")

        _digest_and_verify(server)
        records = _delivered(server.data_dir / "audit")
        _no_record_waits(records)
        assert _emergencies(records) == []
        created = [
            (r.get("requestParameters") or {}).get("name")
            for r in records
            if r["eventName"] == "CreateSecret"
        ]
        assert name in created and after not in created  # before it delivered; after it, waiting
    finally:
        _release(hold, thread)
    assert not isinstance(outcome[0], Exception), outcome

    _digest_and_verify(server)
    records = _delivered(server.data_dir / "audit")
    _no_record_waits(records)
    (done,) = _emergencies(records)
    assert "errorCode" not in done and done["responseElements"]["versionId"] == outcome[0]["VersionId"]
    assert _sqlite_row(server, done["eventID"]) == (done, None)
    created = [
        (r.get("requestParameters") or {}).get("name") for r in records if r["eventName"] == "CreateSecret"
    ]
    assert after in created
    assert len({r["eventID"] for r in records}) == len(records)  # each delivered once


@pytest.mark.postgres
def test_a_node_lost_for_good_has_its_cut_off_calls_marked_by_the_leader(
    tmp_path: Path, private_postgres: str
) -> None:
    """Two nodes on one PostgreSQL database; the one that is not the leader is killed in the middle
    of a call and never comes back. The leader's next pass marks the call as outcome unknown
    (LookupEvents says so before any delivery), and the trail delivers it as such."""
    nodes: list[KhoaServer] = []
    try:
        for index in range(2):
            data = tmp_path / f"node-{index}" / "data"
            data.mkdir(parents=True)
            if nodes:
                shutil.copy2(nodes[0].data_dir / "root.key", data / "root.key")
            # A shorter jobs lease (default 6 s): the lost node's claim on the rotation it was running
            # lives as long, and the leader's pass that takes over that rotation waits it out.
            lease = {"KHOA_JOB_LEASE_SECONDS": "3"}
            nodes.append(KhoaServer(data, database_url=private_postgres, extra_env=lease).start())
        leader, lost = nodes
        wait_for(lambda: leader.run_jobs() > 0, seconds=20)  # the first node leads
        hold = tmp_path / "hold"
        hold.touch()
        name = _held_rotation(lost, hold)
        thread, _ = _running(lost, name, hold)
        lost.kill9()
        _release(hold, thread)

        def shown() -> dict[str, Any]:
            (event,) = lookup(leader.client("cloudtrail"), "EventName", "EmergencyRotateSecret")
            return dict(json.loads(event["CloudTrailEvent"]))

        assert PENDING_KEY in shown()["additionalEventData"]  # its outcome is not known yet
        assert leader.run_jobs() > 0
        marked = shown()
        assert marked["errorCode"] == UNKNOWN_CODE and marked["additionalEventData"] == {"outcome": "unknown"}

        _digest_and_verify(leader)
        records = _delivered(leader.data_dir / "audit")
        _no_record_waits(records)
        assert _emergencies(records) == [marked]
    finally:
        for node in nodes:
            node.stop()
