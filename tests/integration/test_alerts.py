"""Alerts through a real server: each rule fires once for its trigger (delivered to a signed JSON
webhook receiver and a Slack-format receiver started here), normal traffic raises nothing, and alerts
are stored, listed by ``khoa alerts list``, counted in /metrics and recorded as AlertRaised events.

A server start is most of what a scenario costs, so scenarios that fit on one server run on one, in
an order that keeps each one's view of the installation what it would be on a fresh server: a
scenario that counts everything the server ever raised (alerts listed, AlertRaised events, metrics,
what a receiver got) comes before any other that raises an alert; one whose rule is retried as the
clock moves (rotation-failed) comes last; none depends on the clock of another. Between scenarios
the server must be quiet (nothing left to raise). Settings a scenario needs that change no other
scenario's outcome (the trusted proxy, the key's recent-use days, the access-denied thresholds of a
server whose other scenarios see no AccessDenied) are set for its whole server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.test_cloudtrail import lookup
from tests.support import rotation
from tests.support.errors import error_code
from tests.support.identity import eventually
from tests.support.server import ACCOUNT_ID, KhoaServer, free_port

SIGNING_KEY = "alert-signing-key-for-tests"
SECRET_VALUE = "correct-horse-battery-staple-4711"
ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"
OUTSIDE = "203.0.113.9"


# -- receivers ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP endpoint recording every POST; the first ``fail_next`` requests get a 503."""

    name: str
    port: int = field(default_factory=free_port)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_next: int = 0
    seen: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}/T0000/B0000/xyz"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        # A short poll interval: stop() waits for the serving loop to notice (0.5 s by default).
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def new(self) -> list[tuple[dict[str, str], bytes]]:
        fresh = self.requests[self.seen :]
        self.seen = len(self.requests)
        return fresh


@dataclass
class Alerting:
    server: KhoaServer
    webhook: Receiver
    slack: Receiver

    def run(self) -> list[dict[str, Any]]:
        """Run a job pass; return the alerts it delivered (checked on both receivers)."""
        self.server.run_jobs()
        return self.delivered()

    def delivered(self) -> list[dict[str, Any]]:
        alerts = []
        for headers, body in self.webhook.new():
            expected = "sha256=" + hmac.new(SIGNING_KEY.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-khoa-signature"], expected)
            assert headers["content-type"] == "application/json"
            alert = json.loads(body)
            assert headers["x-khoa-alert-id"] == alert["alertId"]
            assert SECRET_VALUE.encode() not in body
            alerts.append(alert)
        slack = [json.loads(body) for _, body in self.slack.new()]
        assert len(slack) == len(alerts)
        for message, alert in zip(slack, alerts, strict=True):
            assert set(message) == {"text", "blocks"}
            assert alert["summary"] in message["text"] or alert["rule"] in message["text"]
            assert message["blocks"][0]["type"] == "header"
            assert alert["rule"] in message["blocks"][0]["text"]["text"]
            assert SECRET_VALUE not in json.dumps(message)
        return alerts

    def quiet(self) -> None:
        assert self.run() == []


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    webhook, slack = Receiver("hook").start(), Receiver("services").start()
    yield webhook, slack
    webhook.stop()
    slack.stop()


def start(fresh_server: KhoaServer, receivers: tuple[Receiver, Receiver], **env: str) -> Alerting:
    webhook, slack = receivers
    fresh_server.extra_env.update(
        {
            "KHOA_ALERT_WEBHOOK_URL": webhook.url,
            "KHOA_ALERT_WEBHOOK_SECRET": SIGNING_KEY,
            "KHOA_ALERT_SLACK_URL": slack.url,
            "KHOA_ALERT_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
            "KHOA_ALERT_ACCESS_DENIED_THRESHOLD": "5",
            "KHOA_ALERT_DECRYPT_FAILURE_THRESHOLD": "3",
            **env,
        }
    )
    alerting = Alerting(fresh_server.start(), webhook, slack)
    # The new leader's first pass starts on its own as leadership is gained: let it finish (a pass run
    # on request waits for it) before the test acts, or it could count a test's events half-way.
    eventually(lambda: alerting.server.run_jobs() > 0)
    alerting.delivered()
    return alerting


@pytest.fixture
def alerting(fresh_server: KhoaServer, receivers: tuple[Receiver, Receiver]) -> Alerting:
    return start(fresh_server, receivers)


# -- helpers --------------------------------------------------------------------------------------


def make_user(server: KhoaServer, name: str, actions: list[str]) -> dict[str, str]:
    iam = server.client("iam")
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/{name}",
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }


def client_as(server: KhoaServer, service: str, user: dict[str, str]) -> Any:
    return server.client(
        service,
        aws_access_key_id=user["aws_access_key_id"],
        aws_secret_access_key=user["aws_secret_access_key"],
    )


def forwarded_for(client: Any, address: str) -> Any:
    def add_header(request: Any, **_: Any) -> None:
        request.headers["X-Forwarded-For"] = address

    client.meta.events.register("before-send.*.*", add_header)
    return client


def khoa_alerts(server: KhoaServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khoa", "alerts", "list", "--data-dir", str(server.data_dir), *args],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def raised_metrics(server: KhoaServer) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(r'^khoa_alerts_raised_total\{rule="([^"]+)"\} (\S+)$', text, re.M)
    }


def only(alerts: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    assert [a["rule"] for a in alerts] == [rule], alerts
    assert alerts[0]["accountId"] == ACCOUNT_ID
    return alerts[0]


# -- normal traffic -------------------------------------------------------------------------------


def normal_traffic_raises_nothing(alerting: Alerting) -> None:
    server = alerting.server
    sm, kms, ssm = server.client("secretsmanager"), server.client("kms"), server.client("ssm")
    # Secrets read by their creators (root, and a user creating its own).
    arn = sm.create_secret(Name="normal/db", SecretString=SECRET_VALUE)["ARN"]
    sm.get_secret_value(SecretId=arn)
    sm.get_secret_value(SecretId="normal/db")
    sm.batch_get_secret_value(SecretIdList=["normal/db"])
    sm.put_secret_value(SecretId=arn, SecretString=SECRET_VALUE + "-2")
    sm.describe_secret(SecretId=arn)
    app = make_user(server, "app", ["secretsmanager:*", "kms:*"])
    app_sm = client_as(server, "secretsmanager", app)
    own = app_sm.create_secret(Name="normal/app", SecretString=SECRET_VALUE)["ARN"]
    app_sm.get_secret_value(SecretId=own)
    app_sm.batch_get_secret_value(SecretIdList=[own])
    # Keys used and managed, nothing scheduled for deletion.
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"hello")["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)
    kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    ssm.put_parameter(Name="/normal/p", Value="v", Type="SecureString")
    ssm.get_parameter(Name="/normal/p", WithDecryption=True)
    # A few refusals and one bad ciphertext stay under the thresholds.
    nobody = make_user(server, "nobody", ["sts:GetCallerIdentity"])
    for _ in range(3):
        assert error_code(client_as(server, "kms", nobody).list_keys) == "AccessDeniedException"
    bad = bytearray(blob)
    bad[-1] ^= 1
    assert error_code(kms.decrypt, CiphertextBlob=bytes(bad)) == "InvalidCiphertextException"
    # A rotation that succeeds: its function's role reads the secret, as expected.
    rotated = sm.create_secret(Name="normal/rotated", SecretString=json.dumps({"password": SECRET_VALUE}))
    function = rotation.register(server, "rotate-ok", "tests.support.rotators:simple")
    rotation.rotate_now(
        server, sm, rotated["ARN"], RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 30}
    )
    assert sm.describe_secret(SecretId=rotated["ARN"]).get("LastRotatedDate")
    alerting.quiet()
    server.advance_clock(600)
    alerting.quiet()
    sm.get_secret_value(SecretId=arn)
    alerting.quiet()

    assert json.loads(khoa_alerts(server, "--json").stdout) == []
    assert "No alerts." in khoa_alerts(server).stdout
    counts = raised_metrics(server)
    assert set(counts) >= {
        "new-secret-reader",
        "rotation-failed",
        "key-deletion-scheduled",
        "access-denied-spike",
        "decryption-failure-burst",
        "audit-sink-errors",
        "unexpected-network",
    }
    assert all(value == 0 for value in counts.values())


# -- one scenario per rule ------------------------------------------------------------------------


def secret_read_by_a_new_principal(alerting: Alerting) -> None:
    server = alerting.server
    sm = server.client("secretsmanager")
    arn = sm.create_secret(Name="payroll/db", SecretString=SECRET_VALUE)["ARN"]
    sm.get_secret_value(SecretId=arn)
    alerting.quiet()  # the creator reading its own secret

    reader = make_user(
        server, "reader", ["secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue"]
    )
    reader_sm = client_as(server, "secretsmanager", reader)
    assert reader_sm.get_secret_value(SecretId=arn)["SecretString"] == SECRET_VALUE
    reader_sm.get_secret_value(SecretId="payroll/db")
    alert = only(alerting.run(), "new-secret-reader")
    assert alert["severity"] == "high"
    assert alert["details"]["secretArn"] == arn
    assert alert["details"]["principal"] == reader["arn"]
    assert alert["details"]["accessKeyId"] == reader["aws_access_key_id"]
    assert alert["resources"] == [{"type": "AWS::SecretsManager::Secret", "ARN": arn}]
    assert len(alert["eventIds"]) == 1

    # Seen now: quiet, whichever way it reads.
    reader_sm.get_secret_value(SecretId=arn)
    reader_sm.batch_get_secret_value(SecretIdList=[arn])
    alerting.quiet()

    # BatchGetSecretValue by yet another principal counts too, once per secret.
    other = sm.create_secret(Name="payroll/api", SecretString=SECRET_VALUE)["ARN"]
    batcher = make_user(
        server, "batcher", ["secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue"]
    )
    batch = client_as(server, "secretsmanager", batcher).batch_get_secret_value(
        SecretIdList=[arn, "payroll/api"]
    )
    assert len(batch["SecretValues"]) == 2
    alerts = alerting.run()
    assert sorted(a["details"]["secretArn"] for a in alerts) == sorted([arn, other])
    assert {a["rule"] for a in alerts} == {"new-secret-reader"}
    assert {a["details"]["principal"] for a in alerts} == {batcher["arn"]}
    client_as(server, "secretsmanager", batcher).get_secret_value(SecretId=other)
    alerting.quiet()

    # A refused read is not a read.
    outsider = make_user(server, "outsider", ["sts:GetCallerIdentity"])
    assert error_code(client_as(server, "secretsmanager", outsider).get_secret_value, SecretId=arn) == (
        "AccessDeniedException"
    )
    alerting.quiet()

    # Stored, listed, counted, recorded - and never with the value.
    listed = json.loads(khoa_alerts(server, "--json").stdout)
    assert [a["rule"] for a in listed] == ["new-secret-reader"] * 3
    assert listed[0]["alertId"] == alert["alertId"]
    assert all(a["delivery"] == {"webhook": "sent", "slack": "sent", "audited": True} for a in listed)
    table = khoa_alerts(server).stdout
    assert "new-secret-reader" in table and SECRET_VALUE not in table
    assert khoa_alerts(server, "--since", "2999-01-01T00:00:00Z", "--json").stdout.strip() == "[]"
    assert raised_metrics(server)["new-secret-reader"] == 3
    events = lookup(server.client("cloudtrail"), "EventName", "AlertRaised")
    assert len(events) == 3
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    first = next(r for r in records if r["eventID"] == alert["auditEventId"])
    assert first["eventType"] == "AwsServiceEvent"
    assert first["additionalEventData"]["alertId"] == alert["alertId"]
    assert first["additionalEventData"]["rule"] == "new-secret-reader"
    assert first["resources"] == [
        {"accountId": ACCOUNT_ID, "type": "AWS::SecretsManager::Secret", "ARN": arn}
    ]
    assert all(SECRET_VALUE not in e["CloudTrailEvent"] for e in events)
    log = server.log_path.read_text()
    assert "ALERT new-secret-reader [high]" in log
    assert SECRET_VALUE not in log


def rotation_failure(alerting: Alerting) -> None:
    server = alerting.server
    sm = server.client("secretsmanager")
    arn = sm.create_secret(Name="rotating", SecretString=json.dumps({"password": SECRET_VALUE}))["ARN"]
    function = rotation.register(server, "rotate-broken", "tests.support.rotators:failing_at_set")
    sm.rotate_secret(SecretId=arn, RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 30})
    # One alert (the function's role reading the secret in createSecret is expected, not a new reader).
    alert = only(alerting.run(), "rotation-failed")
    assert alert["severity"] == "high"
    assert alert["details"]["secretArn"] == arn
    assert alert["details"]["step"] == "setSecret"
    assert "the database is down" not in json.dumps(alert)  # the function's error text stays out
    # The retry of the same rotation fails again: folded into the first alert.
    server.advance_clock(300)
    alerting.quiet()
    assert len(lookup(server.client("cloudtrail"), "EventName", "RotationFailed")) >= 2


def key_scheduled_for_deletion(alerting: Alerting) -> None:
    server = alerting.server
    kms = server.client("kms")
    idle = kms.create_key()["KeyMetadata"]
    busy = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=busy["KeyId"], Plaintext=b"payload")["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)
    alerting.quiet()

    kms.schedule_key_deletion(KeyId=idle["KeyId"], PendingWindowInDays=7)
    alert = only(alerting.run(), "key-deletion-scheduled")
    assert alert["severity"] == "medium"
    assert alert["details"]["keyArn"] == idle["Arn"]
    assert alert["details"]["usedRecently"] is False and "lastUsed" not in alert["details"]
    assert alert["details"]["pendingWindowInDays"] == 7
    assert alert["resources"] == [{"type": "AWS::KMS::Key", "ARN": idle["Arn"]}]

    kms.schedule_key_deletion(KeyId=busy["KeyId"], PendingWindowInDays=30)
    alert = only(alerting.run(), "key-deletion-scheduled")
    assert alert["severity"] == "high"
    assert alert["details"]["keyArn"] == busy["Arn"]
    assert alert["details"]["usedRecently"] is True and alert["details"]["lastUsed"]
    alerting.quiet()

    # A refused or repeated scheduling is no new deletion; cancelling is quiet.
    assert error_code(kms.schedule_key_deletion, KeyId=busy["KeyId"]) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=idle["KeyId"])
    alerting.quiet()


KEY_RECENT_USE_DAYS = {"KHOA_ALERT_KEY_RECENT_USE_DAYS": "7"}


def key_used_long_ago_is_medium(alerting: Alerting) -> None:
    """On a server started with KEY_RECENT_USE_DAYS."""
    kms = alerting.server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"old")
    alerting.server.advance_clock(8 * 86400)
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    alert = only(alerting.run(), "key-deletion-scheduled")
    assert alert["severity"] == "medium"
    assert alert["details"]["recentUseDays"] == 7


def access_denied_spike(alerting: Alerting) -> None:
    server = alerting.server
    nobody = client_as(server, "kms", make_user(server, "prober", ["sts:GetCallerIdentity"]))
    for _ in range(5):  # at the threshold: not over it
        assert error_code(nobody.list_keys) == "AccessDeniedException"
    alerting.quiet()
    assert error_code(nobody.list_aliases) == "AccessDeniedException"
    alert = only(alerting.run(), "access-denied-spike")
    assert alert["details"]["count"] == 6
    assert alert["details"]["limit"] == 5
    assert alert["details"]["topPrincipals"] == [
        {"principal": f"arn:aws:iam::{ACCOUNT_ID}:user/prober", "count": 6}
    ]
    assert {o["operation"] for o in alert["details"]["topOperations"]} == {"kms:ListKeys", "kms:ListAliases"}
    # The spike goes on within the window: still one alert.
    for _ in range(5):
        error_code(nobody.list_keys)
    alerting.quiet()


BASELINE_SETTINGS = {
    "KHOA_ALERT_ACCESS_DENIED_THRESHOLD": "2",
    "KHOA_ALERT_ACCESS_DENIED_FACTOR": "2",
    "KHOA_ALERT_ACCESS_DENIED_WINDOW_SECONDS": "300",
    "KHOA_ALERT_ACCESS_DENIED_BASELINE_SECONDS": "600",
}


def access_denied_spike_is_relative_to_the_baseline(alerting: Alerting) -> None:
    """On a server started with BASELINE_SETTINGS, with no AccessDenied in the last 15 minutes."""
    server = alerting.server
    nobody = client_as(server, "kms", make_user(server, "noisy", ["sts:GetCallerIdentity"]))
    for _ in range(12):
        error_code(nobody.list_keys)
    assert only(alerting.run(), "access-denied-spike")["details"]["count"] == 12
    # Ten minutes later those 12 are the baseline: 6 per window on average, so the limit is 2 x 6.
    server.advance_clock(400)
    for _ in range(7):  # over the threshold of 2, but not over twice the baseline
        error_code(nobody.list_keys)
    alerting.quiet()
    for _ in range(6):  # 13 > 12
        error_code(nobody.list_keys)
    alert = only(alerting.run(), "access-denied-spike")
    assert alert["details"]["count"] == 13
    assert alert["details"]["baselineAveragePerWindow"] == 6.0
    assert alert["details"]["limit"] == 12
    assert alert["details"]["threshold"] == 2


def decryption_failure_burst(alerting: Alerting) -> None:
    server = alerting.server
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = bytearray(kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"])
    blob[-1] ^= 1
    for _ in range(3):
        assert error_code(kms.decrypt, CiphertextBlob=bytes(blob)) == "InvalidCiphertextException"
    alerting.quiet()
    assert error_code(kms.decrypt, CiphertextBlob=bytes(blob)) == "InvalidCiphertextException"
    alert = only(alerting.run(), "decryption-failure-burst")
    assert alert["severity"] == "high"
    assert alert["details"]["count"] == 4
    assert alert["details"]["topOperations"] == [{"operation": "kms:Decrypt", "count": 4}]
    assert error_code(kms.decrypt, CiphertextBlob=bytes(blob)) == "InvalidCiphertextException"
    alerting.quiet()
    # Once the window has passed, a new burst is a new alert.
    server.advance_clock(301)
    for _ in range(4):
        error_code(kms.decrypt, CiphertextBlob=bytes(blob))
    only(alerting.run(), "decryption-failure-burst")


def audit_sink_errors(alerting: Alerting) -> None:
    server = alerting.server
    sm = server.client("secretsmanager")
    alerting.quiet()
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        db.execute(
            "CREATE TRIGGER khoa_test_broken_sink BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit sink broken by the test'); END"
        )
    for _ in range(2):
        assert error_code(sm.list_secrets) == "ServiceUnavailableException"
    alert = only(alerting.run(), "audit-sink-errors")
    assert alert["severity"] == "critical"
    assert alert["details"]["newFailures"] >= 2
    # Still failing (recording the alert itself fails too): one alert per cooldown.
    error_code(sm.list_secrets)
    alerting.quiet()
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        db.execute("DROP TRIGGER khoa_test_broken_sink")
    alerting.quiet()
    # The AlertRaised event was written once the sink came back.
    (event,) = lookup(server.client("cloudtrail"), "EventName", "AlertRaised")
    assert json.loads(event["CloudTrailEvent"])["additionalEventData"]["alertId"] == alert["alertId"]


TRUSTED_PROXY = {"KHOA_TRUSTED_PROXIES": "127.0.0.1/32"}


def credentials_used_from_outside_the_allowed_networks(alerting: Alerting) -> None:
    """On a server started with TRUSTED_PROXY (so that X-Forwarded-For names the caller)."""
    server = alerting.server
    server.client("kms").list_keys()
    alerting.quiet()

    outside = forwarded_for(server.client("kms"), OUTSIDE)
    outside.list_keys()
    outside.list_aliases()
    alert = only(alerting.run(), "unexpected-network")
    assert alert["details"]["address"] == OUTSIDE
    assert alert["details"]["principal"] == ROOT_ARN
    assert alert["details"]["accessKeyId"] == "AKIAKHOATESTROOT0001"
    outside.list_keys()
    alerting.quiet()  # once per key and address per window

    # Another address, or another key from the same address, is new.
    forwarded_for(server.client("kms"), "198.51.100.20").list_keys()
    only(alerting.run(), "unexpected-network")
    user = make_user(server, "roaming", ["kms:ListKeys"])
    forwarded_for(client_as(server, "kms", user), OUTSIDE).list_keys()
    alert = only(alerting.run(), "unexpected-network")
    assert alert["details"]["principal"] == user["arn"]
    # A failed authentication is not a use of the credentials.
    stranger = forwarded_for(
        server.client("kms", aws_access_key_id="AKIANOSUCHKEY0000000", aws_secret_access_key="x" * 40),
        OUTSIDE,
    )
    assert error_code(stranger.list_keys) == "UnrecognizedClientException"
    alerting.quiet()
    # After the window, the same key and address alert again.
    server.advance_clock(3601)
    outside.list_keys()
    only(alerting.run(), "unexpected-network")


def webhook_retries_until_delivered(alerting: Alerting) -> None:
    server = alerting.server
    alerting.webhook.fail_next = 10  # more than one pass's attempts
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    server.run_jobs()
    assert alerting.webhook.requests == []
    assert len(alerting.slack.requests) == 1  # the other receiver is not held up
    listed = json.loads(khoa_alerts(server, "--json").stdout)
    assert listed[0]["delivery"]["webhook"] == "pending"
    alerting.slack.seen = 0  # compare the webhook delivery with the Slack one already made
    alerting.webhook.fail_next = 0
    server.advance_clock(60)
    alert = only(alerting.run(), "key-deletion-scheduled")
    assert alert["alertId"] == listed[0]["alertId"]
    alerting.quiet()
    assert json.loads(khoa_alerts(server, "--json").stdout)[0]["delivery"]["webhook"] == "sent"


# -- the scenarios, grouped by server -------------------------------------------------------------


def run_in_order(alerting: Alerting, *scenarios: Callable[[Alerting], None]) -> None:
    """Each scenario in turn on one server, with nothing left to raise before the next."""
    for scenario in scenarios:
        alerting.quiet()
        scenario(alerting)
    alerting.quiet()


def test_normal_traffic_new_readers_key_deletions_decryption_bursts_and_rotation_failures(
    alerting: Alerting,
) -> None:
    run_in_order(
        alerting,
        normal_traffic_raises_nothing,  # first: nothing may have been raised before it
        secret_read_by_a_new_principal,  # counts every alert raised: before any other raises one
        key_scheduled_for_deletion,
        decryption_failure_burst,
        rotation_failure,  # last: its rotation is retried whenever the clock moves on
    )


def test_webhook_retries_a_key_used_long_ago_and_an_access_denied_spike(
    fresh_server: KhoaServer, receivers: tuple[Receiver, Receiver]
) -> None:
    run_in_order(
        start(fresh_server, receivers, **KEY_RECENT_USE_DAYS),
        webhook_retries_until_delivered,  # first: counts what the receivers ever got
        key_used_long_ago_is_medium,
        access_denied_spike,
    )


def test_audit_sink_errors_credentials_from_outside_and_a_spike_over_the_baseline(
    fresh_server: KhoaServer, receivers: tuple[Receiver, Receiver]
) -> None:
    run_in_order(
        start(fresh_server, receivers, **TRUSTED_PROXY, **BASELINE_SETTINGS),
        audit_sink_errors,  # first: counts every AlertRaised event
        credentials_used_from_outside_the_allowed_networks,
        access_denied_spike_is_relative_to_the_baseline,
    )


def test_disabled_rules_and_no_receivers(fresh_server: KhoaServer) -> None:
    fresh_server.extra_env.update({"KHOA_ALERT_DISABLE": "key-deletion-scheduled"})
    server = fresh_server.start()
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    sm = server.client("secretsmanager")
    arn = sm.create_secret(Name="solo", SecretString=SECRET_VALUE)["ARN"]
    reader = make_user(server, "solo-reader", ["secretsmanager:GetSecretValue"])
    client_as(server, "secretsmanager", reader).get_secret_value(SecretId=arn)
    server.run_jobs()
    listed = json.loads(khoa_alerts(server, "--json").stdout)
    assert [a["rule"] for a in listed] == ["new-secret-reader"]
    assert listed[0]["delivery"] == {"webhook": None, "slack": None, "audited": True}
    assert "ALERT new-secret-reader [high]" in server.log_path.read_text()
