"""``khoa access explain`` against the shared server's installation: a request by principal, action and
resource, and a recorded call by its audit event ID; which policies applied, which statement decided,
and the exit codes (0 explained, 1 not found, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.cli.main import run
from tests.support.identity import Caller, eventually, new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def explain(server: KhoaServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it (a process of its own, on the server's data directory)."""
    return subprocess.run(
        [sys.executable, "-m", "khoa", "access", "explain", *args, "--data-dir", str(server.data_dir)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def explain_here(server: KhoaServer, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same command in this process (khoa.cli.main.run): exit code, stdout, stderr. Used for most
    cases, since a process of its own costs seconds on a loaded machine."""
    capsys.readouterr()
    code = run(["access", "explain", *args, "--data-dir", str(server.data_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


def explained(server: KhoaServer, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = explain_here(server, capsys, *args, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.fixture(scope="module")
def setup(server: KhoaServer) -> dict[str, Any]:
    sm = server.client("secretsmanager")
    name = unique("explain/db")
    secret = sm.create_secret(Name=name, SecretString="not-printed")["ARN"]
    other = sm.create_secret(Name=unique("explain/other"), SecretString="not-printed")["ARN"]
    user = new_user(
        server,
        server.client("iam"),
        {"Sid": "ReadDb", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret},
        {"Sid": "NoDeletes", "Effect": "Deny", "Action": "secretsmanager:DeleteSecret", "Resource": "*"},
    )
    return {"secret": secret, "other": other, "user": user}


def test_an_allowed_request_names_the_allowing_statement(
    server: KhoaServer, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    user: Caller = setup["user"]
    report = explained(
        server,
        capsys,
        "--principal",
        user.arn,
        "--action",
        "secretsmanager:GetSecretValue",
        "--resource",
        setup["secret"],
    )
    assert report["allowed"] is True and report["message"] == ""
    assert "ReadDb" in report["decidingStatement"] and "inline policy inline" in report["decidingStatement"]
    assert [p["kind"] for p in report["policies"]] == ["identity-based"]
    assert {k: report["matchingStatements"][0][k] for k in ("kind", "effect", "sid")} == {
        "kind": "identity-based",
        "effect": "Allow",
        "sid": "ReadDb",
    }


def test_statements_on_principal_tags_are_matched_as_the_decision_saw_them(
    server: KhoaServer, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The statements explain lists are matched against the context the decision was made with: a
    statement conditioned on the caller's tags (or its organization) is shown as the one that allowed."""
    user = new_user(
        server,
        server.client("iam"),
        {
            "Sid": "BlueTeamReads",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": setup["secret"],
            "Condition": {"StringEquals": {"aws:PrincipalTag/Team": "blue"}},
        },
        tags={"Team": "blue"},
    )
    report = explained(
        server,
        capsys,
        "--principal",
        user.arn,
        "--action",
        "secretsmanager:GetSecretValue",
        "--resource",
        setup["secret"],
    )
    assert report["allowed"] is True
    assert "BlueTeamReads" in report["decidingStatement"]
    assert [m["sid"] for m in report["matchingStatements"]] == ["BlueTeamReads"]


def test_an_explicit_deny_names_the_denying_statement(
    server: KhoaServer, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    user: Caller = setup["user"]
    report = explained(
        server,
        capsys,
        "--principal",
        user.arn,
        "--action",
        "secretsmanager:DeleteSecret",
        "--resource",
        setup["secret"],
    )
    assert report["allowed"] is False and report["explicitDeny"] is True
    assert report["decidedBy"] == "identity-based" and "NoDeletes" in report["decidingStatement"]
    assert report["message"].endswith("with an explicit deny in an identity-based policy")
    text = explain(
        server,
        "--principal",
        user.arn,
        "--action",
        "secretsmanager:DeleteSecret",
        "--resource",
        setup["secret"],
    )
    assert text.returncode == 0 and "DENIED (explicit deny)" in text.stdout and "NoDeletes" in text.stdout


def test_a_recorded_denial_is_explained_from_its_event(
    server: KhoaServer, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    user: Caller = setup["user"]
    with pytest.raises(ClientError) as error:
        user.client("secretsmanager").get_secret_value(SecretId=setup["other"])
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    trail = server.client("cloudtrail")
    events: list[dict[str, Any]] = []

    def recorded() -> bool:
        events[:] = [
            e
            for e in trail.lookup_events(
                LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": user.name}]
            )["Events"]
            if e["EventName"] == "GetSecretValue"
        ]
        return bool(events)

    eventually(recorded)
    report = explained(server, capsys, "--event-id", events[0]["EventId"])
    assert report["eventId"] == events[0]["EventId"]
    assert report["recordedError"].startswith("AccessDenied")
    assert report["principal"] == user.arn and report["action"] == "secretsmanager:GetSecretValue"
    assert report["resource"] == setup["other"]
    assert report["allowed"] is False and report["explicitDeny"] is False
    assert "because no identity-based policy allows" in report["message"]
    assert "not-printed" not in json.dumps(report)


def test_the_root_user_and_a_key_policy(server: KhoaServer, capsys: pytest.CaptureFixture[str]) -> None:
    key = server.client("kms").create_key()["KeyMetadata"]["Arn"]
    report = explained(
        server,
        capsys,
        "--principal",
        f"arn:aws:iam::{ACCOUNT_ID}:root",
        "--action",
        "kms:Decrypt",
        "--resource",
        key,
    )
    assert report["allowed"] is True
    assert any(p["kind"] == "resource-based" and key in p["policy"] for p in report["policies"])


def test_errors_are_one_line_with_documented_exit_codes(
    server: KhoaServer, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for args, code in (
        ((), 2),
        (("--event-id", "x", "--principal", setup["user"].arn), 2),
        (("--principal", setup["user"].arn, "--action", "kms:Decrypt"), 2),
        (("--principal", setup["user"].arn, "--action", "not an action", "--resource", "*"), 2),
        (("--principal", "nonsense", "--action", "kms:Decrypt", "--resource", "*"), 2),
        (("--event-id", "00000000-0000-0000-0000-000000000000"), 1),
        (
            (
                "--principal",
                f"arn:aws:iam::{ACCOUNT_ID}:user/nobody-here",
                "--action",
                "kms:Decrypt",
                "--resource",
                "*",
            ),
            1,
        ),
    ):
        exit_code, out, err = explain_here(server, capsys, *args)
        assert exit_code == code, (args, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
