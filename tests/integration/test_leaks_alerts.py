"""khoa-leaks' alerts through a real server: ``secret-leaked`` for a live value reported leaked, and
``leak-check-burst`` for a principal testing many guesses; neither carries a value."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from khoa.client.leaks import leaks_client
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer


def client_for(server: KhoaServer, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> Any:
    session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    return leaks_client(session, server.endpoint, REGION, config=Config(retries={"max_attempts": 1}))


def alerts(server: KhoaServer) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "khoa",
            "alerts",
            "list",
            "--json",
            "--limit",
            "1000",
            "--data-dir",
            str(server.data_dir),
        ],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def wait_for(server: KhoaServer, rule: str, match: str) -> tuple[dict[str, Any], str]:
    """The first alert of ``rule`` whose JSON contains ``match``, running job passes until it is raised;
    with the whole list's text."""
    deadline = time.monotonic() + 30
    while True:
        server.run_jobs()
        listed = alerts(server)
        for alert in listed:
            if alert["rule"] == rule and match in json.dumps(alert):
                return alert, json.dumps(listed)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {rule} alert for {match}: {[a['rule'] for a in listed]}")
        time.sleep(0.3)


def test_a_live_value_reported_leaked_raises_secret_leaked(server: KhoaServer, sm: Any) -> None:
    stored = f"leaked-{secrets.token_urlsafe(24)}"
    created = sm.create_secret(Name=unique("leak-alert"), SecretString=json.dumps({"password": stored}))
    answer = client_for(server).report_leaked_values(
        Candidates=[{"Id": "repo/app.py:12", "Value": stored}],
        SourceUrl="https://user:token123@git.example/org/repo/blob/main/app.py?ref=abc",
        Respond=False,
    )
    assert [(m["Status"], m["ResourceArn"], m["Field"]) for m in answer["Matches"]] == [
        ("live", created["ARN"], "password")
    ]
    assert answer["Responses"] == []
    alert, everything = wait_for(server, "secret-leaked", created["ARN"])
    assert alert["severity"] == "critical"
    assert alert["accountId"] == ACCOUNT_ID
    assert alert["details"]["sourceUrl"] == "https://git.example/org/repo/blob/main/app.py"
    assert alert["details"]["versionId"] == created["VersionId"]
    assert stored not in everything and "token123" not in everything


def test_a_former_value_reported_raises_nothing(server: KhoaServer, sm: Any) -> None:
    name = unique("leak-former")
    old = f"old-{secrets.token_urlsafe(24)}"
    created = sm.create_secret(Name=name, SecretString=old)
    sm.put_secret_value(SecretId=name, SecretString=f"new-{secrets.token_urlsafe(8)}")
    sm.put_secret_value(SecretId=name, SecretString=f"newer-{secrets.token_urlsafe(8)}")
    answer = client_for(server).report_leaked_values(
        Candidates=[{"Id": "1", "Value": old}], SourceUrl="https://paste.example/x", Respond=False
    )
    assert [m["Status"] for m in answer["Matches"]] == ["former"]
    server.run_jobs()
    server.run_jobs()
    assert not [a for a in alerts(server) if a["rule"] == "secret-leaked" and created["ARN"] in json.dumps(a)]


def test_a_burst_of_checks_raises_leak_check_burst(server: KhoaServer, iam: Any) -> None:
    prober = new_user(server, iam, {"Effect": "Allow", "Action": "khoa:CheckLeakedValues", "Resource": "*"})
    client = client_for(server, prober.access_key_id, prober.secret_access_key)
    guess = f"guess-{secrets.token_urlsafe(16)}"

    def call(_: int) -> str:
        try:
            client.check_leaked_values(Candidates=[{"Id": "1", "Value": guess}])
            return "ok"
        except client.exceptions.ClientError as error:
            return str(error.response["Error"]["Code"])

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(call, range(40)))  # over the default threshold of 30 in 60 s
    assert "ThrottlingException" in outcomes
    alert, everything = wait_for(server, "leak-check-burst", prober.arn)
    assert alert["severity"] == "high"
    assert alert["details"]["count"] > 30
    assert alert["details"]["throttled"] >= 1
    assert guess not in everything


@pytest.mark.parametrize("rule", ["leak-check-burst", "secret-leaked"])
def test_rules_can_be_disabled_by_name(rule: str) -> None:
    from khoa.alerts.config import AlertSettings
    from khoa.alerts.rules import build_rules

    names = {r.name for r in build_rules(AlertSettings.from_env({}))}
    assert rule in names
    assert rule not in {r.name for r in build_rules(AlertSettings.from_env({"KHOA_ALERT_DISABLE": rule}))}
