"""``khoa review`` against a live installation: a deliberately misconfigured account (each rule's
trigger, built through boto3) gives exactly the expected findings, and a clean account passes.

One private server for the module (the test moves its clock three days forward, so rotation windows
close and access goes unused); the CLI runs as a subprocess on the server's data directory while the
server runs, evaluated ``--at`` the server's clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from khoa.cli.main import run
from khoa.review.rules import RULES
from tests.support.cli_here import create_account, khoa_here
from tests.support.identity import Caller, new_user
from tests.support.rotation import ROTATION_ACTIONS
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

OUTSIDE = "999988887777"
WEBHOOK = {"KHOA_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/review-hook"}


Cli = Callable[..., tuple[int, str, str]]


@dataclass
class Installation:
    server: KhoaServer
    clean: Caller
    expected: list[tuple[str, str]] = field(default_factory=list)  # (rule, resource) for account A
    at: str = ""

    def review(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**self.server.env(), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "khoa", "review", "--data-dir", str(self.server.data_dir), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def review_json(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        done = self.review("--format", "json", "--at", self.at, *args, env=env)
        assert done.stderr == "", done.stderr
        return done.returncode, json.loads(done.stdout)


def _key_arn(key_id: str, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:kms:{REGION}:{account}:key/{key_id}"


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _rotated(sm: Any, secret: str, server: KhoaServer) -> None:
    for _ in range(20):
        if sm.describe_secret(SecretId=secret).get("LastRotatedDate"):
            return
        server.run_jobs()
    raise AssertionError(f"{secret} did not rotate")


def _rotator(server: KhoaServer, iam: Any, account: str) -> tuple[str, str]:
    """A rotation function acting as a role of ``account`` allowed what rotation needs: (function, role)."""
    role = iam.create_role(
        RoleName="review-rotation",
        AssumeRolePolicyDocument=_policy(
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    iam.put_role_policy(
        RoleName="review-rotation",
        PolicyName="rotation",
        PolicyDocument=_policy(
            {
                "Effect": "Allow",
                "Action": ROTATION_ACTIONS,
                "Resource": f"arn:aws:secretsmanager:*:{account}:secret:*",
            }
        ),
    )
    khoa_here(
        server, "functions", "register", "review-rotator", "--account", account, "--region", REGION,
        "--python", "tests.support.rotators:noop", "--role", role,
    )  # fmt: skip
    return f"arn:aws:lambda:{REGION}:{account}:function:review-rotator", role


def _misconfigure(server: KhoaServer) -> tuple[list[tuple[str, str]], Caller]:
    """Account A: one trigger per rule; returns the (rule, resource) findings they must produce."""
    sm, kms, ssm, iam = (server.client(s) for s in ("secretsmanager", "kms", "ssm", "iam"))
    rotator, role = _rotator(server, iam, ACCOUNT_ID)
    # The rotation role may read secrets, and the function (noop) never does.
    expected: list[tuple[str, str]] = [("unused-access", role)]
    credentials = json.dumps({"engine": "postgres", "username": "app", "password": "Xq7-unit-test-pw"})

    # A production credential on the AWS managed key, without rotation.
    arn = sm.create_secret(Name="prod/billing/db/primary", SecretString=credentials)["ARN"]
    expected += [("secret-rotation-disabled", arn), ("secret-default-key", arn)]
    # Rotation configured, never run.
    arn = sm.create_secret(Name="dev/billing/api/token", SecretString="opaque")["ARN"]
    sm.rotate_secret(
        SecretId=arn,
        RotationLambdaARN=rotator,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    expected.append(("rotation-untested", arn))
    # Rotated once, daily schedule: overdue once the clock moves three days on.
    arn = sm.create_secret(Name="dev/billing/db/replica", SecretString=credentials)["ARN"]
    sm.rotate_secret(SecretId=arn, RotationLambdaARN=rotator, RotationRules={"AutomaticallyAfterDays": 1})
    _rotated(sm, arn, server)
    expected.append(("rotation-overdue", arn))
    # A name outside <env>/<app>/<kind>/<name>.
    named = sm.create_secret(Name="BillingLegacySecret", SecretString="opaque")["ARN"]
    expected.append(("naming-convention", named))
    # A secret anyone may read.
    arn = sm.create_secret(Name="dev/billing/config/shared", SecretString="opaque")["ARN"]
    sm.put_resource_policy(
        SecretId=arn,
        BlockPublicPolicy=False,
        ResourcePolicy=_policy(
            {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
        ),
    )
    expected += [("external-access", arn), ("overly-permissive-policy", arn)]
    # A key another account may use, through its key policy and a grant.
    shared = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=shared)
    kms.put_key_policy(
        KeyId=shared,
        PolicyName="default",
        Policy=_policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {"Effect": "Allow", "Principal": {"AWS": OUTSIDE}, "Action": "kms:Decrypt", "Resource": "*"},
        ),
    )
    kms.create_grant(KeyId=shared, GranteePrincipal=f"arn:aws:iam::{OUTSIDE}:root", Operations=["Decrypt"])
    expected += [("external-access", _key_arn(shared))] * 2
    # A user with secretsmanager:* that never reads anything, and one that reads what it may.
    sloppy = new_user(server, iam, {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"})
    expected += [("overly-permissive-policy", sloppy.arn), ("unused-access", sloppy.arn)]
    reader = new_user(
        server, iam, {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": named}
    )
    # A customer managed key without rotation.
    plain = kms.create_key()["KeyMetadata"]["KeyId"]
    expected.append(("key-rotation-disabled", _key_arn(plain)))
    # A key used, then scheduled for deletion.
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=doomed)
    kms.encrypt(KeyId=doomed, Plaintext=b"still in use")
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    expected.append(("key-pending-deletion-in-use", _key_arn(doomed)))
    # A credential in a String parameter (and a harmless one).
    ssm.put_parameter(
        Name="/dev/billing/db-url", Type="String", Value="postgres://app:Xq7unitTestPw9@db:5432/billing"
    )
    ssm.put_parameter(Name="/dev/billing/region", Type="String", Value="eu-west-1")
    expected.append(
        ("plaintext-secret-parameter", f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/dev/billing/db-url")
    )
    return expected, reader


def _configure_cleanly(server: KhoaServer, clean: Caller) -> None:
    """Account B: the same kinds of resources, configured as the checklist asks."""
    sm, kms, ssm = (clean.client(s) for s in ("secretsmanager", "kms", "ssm"))
    rotator, _ = _rotator(server, clean.client("iam"), clean.account_id)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key)
    credentials = json.dumps({"engine": "postgres", "username": "app", "password": "Xq7-unit-test-pw"})
    arn = sm.create_secret(Name="prod/billing/db/primary", SecretString=credentials, KmsKeyId=key)["ARN"]
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=_policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{clean.account_id}:root"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        ),
    )
    sm.rotate_secret(SecretId=arn, RotationLambdaARN=rotator, RotationRules={"AutomaticallyAfterDays": 30})
    _rotated(sm, arn, server)
    ssm.put_parameter(Name="/prod/billing/region", Type="String", Value="eu-west-1")


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    server = KhoaServer(tmp_path_factory.mktemp("review") / "data").start()
    try:
        clean = create_account(server)
        expected, reader = _misconfigure(server)
        _configure_cleanly(server, clean)
        server.advance_clock(3 * 86400)
        reader.client("secretsmanager").get_secret_value(SecretId="BillingLegacySecret")
        assert run(["audit", "digest", "--data-dir", str(server.data_dir)]) == 0
        server.client("kms").list_keys()  # an event after the digest
        # A minute on: the events since the digest are older than two one-second digest periods.
        at = (server.clock_now() + timedelta(minutes=1)).isoformat()
        yield Installation(server, clean, expected, at)
    finally:
        server.stop()


@pytest.fixture
def cli(
    installation: Installation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """``khoa review`` run in this process (the subprocess runs above show it works beside the server;
    these check options and output shapes without paying for an interpreter each): (exit, out, err)."""

    def review(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name in [name for name in os.environ if name.startswith("KHOA_")]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = run(["review", "--data-dir", str(installation.server.data_dir), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return review


def _json(
    cli: Cli, installation: Installation, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("--format", "json", "--at", installation.at, *args, env=env)
    assert err == "", err
    return code, json.loads(out)


def _difference(report: dict[str, Any], expected: list[tuple[str, str]]) -> str:
    got = _pairs(report)
    unexpected = [f for f in report["findings"] if (f["rule"], f["resource"]) not in expected]
    return f"unexpected: {unexpected}; missing: {[p for p in expected if p not in got]}"


def _pairs(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["rule"], f["resource"]) for f in report["findings"])


def test_a_misconfigured_account_gets_exactly_the_expected_findings(installation: Installation) -> None:
    # A one-second digest period: the events after the last digest are behind.
    code, report = installation.review_json(
        "--account", ACCOUNT_ID, "--unused-days", "1", env={"KHOA_AUDIT_DIGEST_SECONDS": "1"}
    )
    expected = [
        *installation.expected,
        ("alerts-not-routed", "khoa://installation/alerts"),
        ("audit-trail-unverified", "khoa://installation/audit-trail"),
    ]
    assert _pairs(report) == sorted(expected), _difference(report, expected)
    assert code == 1  # high findings, --fail-on high by default
    assert report["passed"] == []  # every rule has its trigger
    severities = {rule.id: rule.severity.label for rule in RULES}
    for finding in report["findings"]:
        assert set(finding) == {"rule", "severity", "resource", "message", "fix"}
        assert finding["severity"] == severities[finding["rule"]]
        assert finding["message"] and finding["fix"]
    # No value is ever printed: not the credential, not the parameter's password.
    text = json.dumps(report)
    assert "Xq7" not in text


def test_a_clean_account_passes(installation: Installation, cli: Cli) -> None:
    code, report = installation.review_json("--account", installation.clean.account_id, env=WEBHOOK)
    assert report["findings"] == []
    assert sorted(report["passed"]) == sorted(rule.id for rule in RULES)
    assert code == 0
    code, out, _ = cli("--account", installation.clean.account_id, "--at", installation.at, env=WEBHOOK)
    assert code == 0
    assert "0 finding(s)" in out and f"{len(RULES)} of {len(RULES)} rules passed" in out


def test_every_account_is_reviewed_without_account(installation: Installation, cli: Cli) -> None:
    # The default 90 days: principals made three days ago are too new to call unused.
    code, report = _json(cli, installation, env=WEBHOOK)
    expected = [p for p in installation.expected if p[0] != "unused-access"]
    assert _pairs(report) == sorted(expected), _difference(report, expected)
    assert code == 1


@pytest.mark.parametrize(("threshold", "exit_code"), [("high", 0), ("medium", 1), ("low", 1)])
def test_fail_on_sets_the_threshold(
    installation: Installation, cli: Cli, threshold: str, exit_code: int
) -> None:
    # The clean account with alerts routed nowhere: one medium finding.
    code, report = _json(
        cli, installation, "--account", installation.clean.account_id, "--fail-on", threshold
    )
    assert [(f["rule"], f["severity"]) for f in report["findings"]] == [("alerts-not-routed", "medium")]
    assert code == exit_code


def test_the_naming_pattern_is_configurable(installation: Installation, cli: Cli) -> None:
    account = installation.clean.account_id
    for args, env in (
        (("--naming-pattern", "^team-[a-z]+$"), WEBHOOK),
        ((), {**WEBHOOK, "KHOA_REVIEW_NAMING_PATTERN": "^team-[a-z]+$"}),
    ):
        code, report = _json(cli, installation, "--account", account, *args, env=env)
        assert [(f["rule"], f["severity"]) for f in report["findings"]] == [("naming-convention", "low")]
        assert code == 0  # low is under the default --fail-on high
        code, _ = _json(cli, installation, "--account", account, "--fail-on", "low", *args, env=env)
        assert code == 1


def test_sarif_output(installation: Installation, cli: Cli) -> None:
    code, out, _ = cli(
        "--account", ACCOUNT_ID, "--format", "sarif", "--at", installation.at, "--unused-days", "1"
    )
    assert code == 1
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0" and "sarif" in sarif["$schema"]
    (sarif_run,) = sarif["runs"]
    driver = sarif_run["tool"]["driver"]
    assert [rule["id"] for rule in driver["rules"]] == [rule.id for rule in RULES]
    results = sarif_run["results"]
    _, report = _json(cli, installation, "--account", ACCOUNT_ID, "--unused-days", "1")
    assert len(results) == len(report["findings"]) > 0
    for result, finding in zip(results, report["findings"], strict=True):
        assert result["ruleId"] == finding["rule"]
        assert driver["rules"][result["ruleIndex"]]["id"] == finding["rule"]
        assert result["level"] == {"high": "error", "medium": "warning", "low": "note"}[finding["severity"]]
        assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == finding["resource"]
        assert finding["fix"] in result["message"]["text"]


def test_markdown_output(installation: Installation, cli: Cli) -> None:
    code, out, _ = cli(
        "--account", ACCOUNT_ID, "--format", "markdown", "--at", installation.at, "--unused-days", "1"
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "# Khoa review"
    header = lines.index("| severity | rule | resource | finding | fix |")
    assert lines[header + 1] == "|---|---|---|---|---|"
    rows = [line for line in lines[header + 2 :] if line.startswith("| ")]
    _, report = _json(cli, installation, "--account", ACCOUNT_ID, "--unused-days", "1")
    assert len(rows) == len(report["findings"]) > 0
    for row, finding in zip(rows, report["findings"], strict=True):
        assert row.startswith(f"| {finding['severity']} | `{finding['rule']}` | `{finding['resource']}` |")
    code, out, _ = cli("--account", installation.clean.account_id, "--format", "markdown", env=WEBHOOK)
    assert code == 0 and "No findings." in out


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "xml"),
        ("--fail-on", "critical"),
        ("--account", "12"),
        ("--account", "000000000000"),
        ("--naming-pattern", "(unclosed"),
        ("--at", "yesterday"),
        ("--unused-days", "-1"),
        ("--no-such-option",),
    ],
)
def test_bad_usage_exits_2_with_one_line(cli: Cli, args: tuple[str, ...]) -> None:
    code, out, err = cli(*args)
    assert code == 2, (args, out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_installation_is_one_line(tmp_path: Path, cli: Cli) -> None:
    code, out, err = cli("--data-dir", str(tmp_path / "nothing"))
    assert code == 1
    assert out == "" and len(err.strip().splitlines()) == 1 and "no Khoa installation" in err


def test_a_trail_that_does_not_verify_is_a_finding(installation: Installation, cli: Cli) -> None:
    account = installation.clean.account_id
    log_files = sorted((installation.server.data_dir / "audit").rglob(f"{account}_CloudTrail_*.json.gz"))
    assert log_files
    original = log_files[0].read_bytes()
    try:
        log_files[0].write_bytes(original[:-8] + bytes(8))  # a delivered log file, modified
        code, report = _json(cli, installation, "--account", account, env=WEBHOOK)
        assert [(f["rule"], f["resource"]) for f in report["findings"]] == [
            ("audit-trail-unverified", "khoa://installation/audit-trail")
        ]
        assert "does not verify" in report["findings"][0]["message"]
        assert code == 1
    finally:
        log_files[0].write_bytes(original)
    code, report = _json(cli, installation, "--account", account, env=WEBHOOK)
    assert (code, report["findings"]) == (0, [])
