"""Prometheus metrics a secrets operator alerts on, and readiness."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.request

from tests.integration.test_cloudtrail import seed_user
from tests.support.errors import error_code
from tests.support.server import KhoaServer

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(server: KhoaServer) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_metrics_for_denials_decryption_failures_and_pending_deletions(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    samples = scrape(server)
    assert samples["khoa_sealed"] == 0
    assert samples["khoa_kms_keys_pending_deletion"] == 0
    assert samples["khoa_audit_sink_errors_total"] == 0

    key_id, secret = seed_user(server, "metrics-nobody")
    nobody = server.client("kms", aws_access_key_id=key_id, aws_secret_access_key=secret)
    assert error_code(nobody.list_keys) == "AccessDeniedException"
    assert error_code(nobody.list_aliases) == "AccessDeniedException"
    nobody_sts = server.client("sts", aws_access_key_id=key_id, aws_secret_access_key=secret)
    assert error_code(
        nobody_sts.assume_role, RoleArn="arn:aws:iam::111122223333:role/none", RoleSessionName="probe"
    ) == ("AccessDenied")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = bytearray(kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"])
    blob[-1] ^= 1
    assert error_code(kms.decrypt, CiphertextBlob=bytes(blob)) == "InvalidCiphertextException"
    doomed = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
    for key_id in doomed:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=doomed[0])
    sm = server.client("secretsmanager")
    sm.create_secret(Name="overdue", SecretString="x")
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        db.execute("UPDATE sm_secrets SET rotation_enabled = 1, next_rotation_at = 1 WHERE name = 'overdue'")

    samples = scrape(server)
    assert samples['khoa_access_denied_total{operation="ListKeys",service="kms"}'] == 1
    assert samples['khoa_access_denied_total{operation="ListAliases",service="kms"}'] == 1
    assert samples['khoa_access_denied_total{operation="AssumeRole",service="sts"}'] == 1
    assert samples["khoa_decryption_failures_total"] == 1
    assert samples["khoa_kms_keys_pending_deletion"] == 2
    assert samples["khoa_secrets_rotation_overdue"] == 1
    assert (
        samples['khoa_requests_total{operation="Decrypt",outcome="InvalidCiphertextException",service="kms"}']
        == 1
    )
    # Every series Khoa exposes is named khoa_…
    assert all(name.startswith("khoa_") for name in samples)


def test_ready_reports_what_it_checked(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    with urllib.request.urlopen(f"{server.endpoint}/_khoa/ready", timeout=10) as response:
        assert response.status == 200
        body = json.loads(response.read())
        assert isinstance(body.pop("leader"), bool)  # whether this node runs background work
        assert body == {
            "status": "ok",
            "sealed": False,
            "database": "ok",
            "audit": "ok",
        }
