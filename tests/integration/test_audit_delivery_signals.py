"""An audit directory that cannot be written shows: ``/_khoa/ready`` says 503 with the reason, the
``khoa_audit_delivery_failing`` metric is 1, the ``audit-delivery-failing`` alert is raised; and all of
it clears once the directory can be written again.

Tests run as root, whom permissions do not stop, so the directory is made unwritable by putting a
file where it should be (every write under it then fails with ENOTDIR, whoever the writer is).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from khoa.audit.outcomes import PENDING_KEY, UNKNOWN_CODE, Writer
from tests.integration.test_audit_metrics import scrape
from tests.integration.test_cloudtrail import lookup
from tests.support.server import KhoaServer


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
        time.sleep(0.5)


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


def test_a_call_cut_off_by_a_crash_reads_as_outcome_unknown_after_restart(fresh_server: KhoaServer) -> None:
    """A write's first record (made before it ran) whose process died is marked when the node starts
    again: LookupEvents shows ``Khoa.OutcomeUnknown`` instead of what read like a success."""
    server = fresh_server.start()
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
    # The trail still verifies once delivered.
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "audit", "digest", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=server.env(),
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "audit", "verify", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=server.env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
