"""Fail closed: while the audit sink cannot commit, every call is refused and nothing changes.

The sink is broken from outside, as a failing disk or a locked-down table would break it: a trigger
in the server's database aborts every insert into the trail (no test hook in the server). Dropping
the trigger repairs it.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.integration.test_cloudtrail import all_events
from tests.support.errors import error_response
from tests.support.server import KhoaServer


def break_sink(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "khoa.db") as db:
        db.execute(
            "CREATE TRIGGER khoa_test_broken_sink BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit sink broken by the test'); END"
        )


def repair_sink(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "khoa.db") as db:
        db.execute("DROP TRIGGER khoa_test_broken_sink")


def get(server: KhoaServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{server.endpoint}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(server: KhoaServer, name: str) -> float:
    _, text = get(server, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_calls_are_refused_and_change_nothing_while_the_sink_is_broken(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms, sm, ssm, sts = (server.client(s) for s in ("kms", "secretsmanager", "ssm", "sts"))
    existing = sm.create_secret(Name="existing", SecretString="before")["ARN"]
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    assert get(server, "/_khoa/ready")[0] == 200

    break_sink(server.data_dir)
    name = f"refused-{uuid.uuid4().hex[:8]}"
    attempts = [
        (sm.create_secret, {"Name": name, "SecretString": "never stored"}),
        (sm.put_secret_value, {"SecretId": existing, "SecretString": "never stored"}),
        (sm.get_secret_value, {"SecretId": existing}),
        (ssm.put_parameter, {"Name": f"/{name}", "Value": "never", "Type": "String"}),
        (kms.schedule_key_deletion, {"KeyId": key, "PendingWindowInDays": 7}),
        (kms.encrypt, {"KeyId": key, "Plaintext": b"x"}),
        (kms.create_alias, {"AliasName": f"alias/{name}", "TargetKeyId": key}),
        (sts.get_caller_identity, {}),
    ]
    for call, kwargs in attempts:
        response = error_response(call, **kwargs)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 503, call
        assert response["Error"]["Code"] in ("ServiceUnavailableException", "ServiceUnavailable"), call
    # A refused authentication cannot be recorded either: it is refused as unavailable too.
    forged = server.client("kms", aws_secret_access_key="wrong-secret-access-key-00000000000000000")
    assert error_response(forged.list_keys)["ResponseMetadata"]["HTTPStatusCode"] == 503

    status, body = get(server, "/_khoa/ready")
    assert status == 503
    assert json.loads(body)["audit"] == "failing"
    assert get(server, "/_khoa/health")[0] == 200  # alive, just not ready
    assert metric(server, "khoa_audit_sink_errors_total") >= len(attempts)

    repair_sink(server.data_dir)
    # Nothing that was refused happened.
    assert error_response(sm.describe_secret, SecretId=name)["Error"]["Code"] == "ResourceNotFoundException"
    assert sm.get_secret_value(SecretId=existing)["SecretString"] == "before"
    assert error_response(ssm.get_parameter, Name=f"/{name}")["Error"]["Code"] == "ParameterNotFound"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert all(a["AliasName"] != f"alias/{name}" for a in kms.list_aliases()["Aliases"])
    # The sink works again: calls are recorded, and the process is ready once a commit succeeded.
    assert get(server, "/_khoa/ready")[0] == 200
    recorded = [json.loads(e["CloudTrailEvent"]) for e in all_events(server.client("cloudtrail"))]
    assert [r["requestParameters"]["name"] for r in recorded if r["eventName"] == "CreateSecret"] == [
        "existing"
    ]
    assert not {"PutSecretValue", "ScheduleKeyDeletion", "CreateAlias", "PutParameter"} & {
        r["eventName"] for r in recorded
    }


def test_background_work_counts_sink_failures(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    server.advance_clock(8 * 86400)
    break_sink(server.data_dir)
    server.run_jobs()
    assert get(server, "/_khoa/ready")[0] == 503
    assert "could not record 1 DeleteKey events" in server.log_path.read_text()
    repair_sink(server.data_dir)
