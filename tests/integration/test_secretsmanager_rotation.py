"""RotateSecret / CancelRotateSecret bookkeeping through boto3 against a real server: the rotation
configuration (Lambda ARN, AutomaticallyAfterDays, rate(), six-field cron(), Duration), its validation,
and the NextRotationDate DescribeSecret reports.

Running rotation functions is not part of this: the function the tests name is registered (as AWS
needs the Lambda function to exist), and RotateImmediately=False keeps the engine from running it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

LAMBDA = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:sm-bookkeeping"


def noop(event: dict[str, Any], client: Any) -> None:
    """The registered rotation function; never run here (RotateImmediately=False)."""


@pytest.fixture(scope="module", autouse=True)
def registered_function(server: KhoaServer) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "khoa",
            "functions",
            "register",
            "sm-bookkeeping",
            "--account",
            ACCOUNT_ID,
            "--region",
            REGION,
            "--python",
            f"{__name__}:noop",
            "--data-dir",
            str(server.data_dir),
        ],
        env=server.env(),
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module", autouse=True)
def rotate_me(server: KhoaServer) -> str:
    """RotationLambdaARN must name a registered function: these bookkeeping tests use one that
    succeeds at every step without changing the secret."""
    return server.register_function("rotate-me", "tests.support.rotators:noop")


@pytest.fixture
def unchecked(server: KhoaServer) -> Any:
    """A client that sends what it is given, so the server's own validation answers."""
    return server.client("secretsmanager", validate=False)


def midnight(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def test_rotate_with_automatically_after_days(sm: Any) -> None:
    name = secret_name("rotation")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    token = str(uuid.uuid4())
    result = sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=LAMBDA,
        RotationRules={"AutomaticallyAfterDays": 30},
        ClientRequestToken=token,
        RotateImmediately=False,
    )
    assert (result["ARN"], result["Name"], result["VersionId"]) == (arn, name, token)
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert described["RotationLambdaARN"] == LAMBDA
    assert described["RotationRules"] == {"AutomaticallyAfterDays": 30}
    # the window of the 30th day from now ends at the end of that UTC day
    expected = midnight(datetime.now(UTC)) + timedelta(days=31) - timedelta(seconds=1)
    assert abs(described["NextRotationDate"] - expected) <= timedelta(days=1)
    assert described["NextRotationDate"].astimezone(UTC).time().isoformat() == "23:59:59"
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"][0]
    assert listed["RotationEnabled"] is True
    assert listed["NextRotationDate"] == described["NextRotationDate"]


def test_rotate_with_schedule_expressions(sm: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    rules = {"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "2h"}
    sm.rotate_secret(SecretId=name, RotationLambdaARN=LAMBDA, RotationRules=rules, RotateImmediately=False)
    described = sm.describe_secret(SecretId=name)
    assert described["RotationRules"] == rules
    next_date = described["NextRotationDate"].astimezone(UTC)
    assert next_date.day in (1, 15)
    assert (next_date.hour, next_date.minute, next_date.second) == (17, 59, 59)
    assert next_date > datetime.now(UTC)

    rules = {"ScheduleExpression": "rate(10 days)"}
    sm.rotate_secret(SecretId=name, RotationRules=rules, RotateImmediately=False)
    described = sm.describe_secret(SecretId=name)
    assert described["RotationRules"] == rules
    assert described["RotationLambdaARN"] == LAMBDA  # kept from before
    assert described["NextRotationDate"] > datetime.now(UTC) + timedelta(days=9)

    rules = {"ScheduleExpression": "rate(4 hours)", "Duration": "3h"}
    sm.rotate_secret(SecretId=name, RotationRules=rules, RotateImmediately=False)
    next_date = sm.describe_secret(SecretId=name)["NextRotationDate"].astimezone(UTC)
    assert next_date - datetime.now(UTC) < timedelta(hours=8)
    assert next_date.hour % 4 == 2 and next_date.minute == 59


@pytest.mark.parametrize(
    "rules",
    [
        {"AutomaticallyAfterDays": 7, "ScheduleExpression": "rate(7 days)"},
        {"ScheduleExpression": "rate(2 hours)"},
        {"ScheduleExpression": "rate(1000 days)"},
        {"ScheduleExpression": "cron(0 16 1,15 * ?)"},
        {"ScheduleExpression": "cron(15 16 1,15 * ? *)"},
        {"ScheduleExpression": "cron(0 16 1,15 * MON *)"},
        {"ScheduleExpression": "cron(0 16 1,15 * ? 2030)"},
        {"ScheduleExpression": "cron(0 22 ? * MON *)", "Duration": "4h"},
        {"ScheduleExpression": "rate(6 hours)", "Duration": "8h"},
        {"ScheduleExpression": "rate(1 day)", "Duration": "30h"},
        {"ScheduleExpression": "sometimes"},
    ],
)
def test_invalid_rules(sm: Any, rules: dict[str, Any]) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    code = error_code(sm.rotate_secret, SecretId=name, RotationLambdaARN=LAMBDA, RotationRules=rules)
    assert code == "InvalidParameterException"
    assert "RotationEnabled" not in sm.describe_secret(SecretId=name)


def test_model_limits(sm: Any, unchecked: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    for rules in (
        {"AutomaticallyAfterDays": 0},
        {"AutomaticallyAfterDays": 1001},
        {"ScheduleExpression": "rate(1 day)", "Duration": "1d"},
    ):
        code = error_code(
            unchecked.rotate_secret, SecretId=name, RotationLambdaARN=LAMBDA, RotationRules=rules
        )
        assert code == "ValidationException", rules


def test_rotation_needs_a_lambda(sm: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    code = error_code(sm.rotate_secret, SecretId=name, RotationRules={"AutomaticallyAfterDays": 1})
    assert code == "InvalidRequestException"
    code = error_code(sm.rotate_secret, SecretId=name, RotationLambdaARN="not-an-arn")
    assert code == "InvalidParameterException"
    assert error_code(sm.rotate_secret, SecretId=secret_name("missing"), RotationLambdaARN=LAMBDA) == (
        "ResourceNotFoundException"
    )


def test_an_unfinished_rotation_blocks_the_next(sm: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    sm.put_secret_value(SecretId=name, SecretString="pending", VersionStages=["AWSPENDING"])
    code = error_code(sm.rotate_secret, SecretId=name, RotationLambdaARN=LAMBDA)
    assert code == "InvalidRequestException"


def test_cancel_rotation(sm: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    assert error_code(sm.cancel_rotate_secret, SecretId=name) == "InvalidRequestException"
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=LAMBDA,
        RotationRules={"AutomaticallyAfterDays": 5},
        RotateImmediately=False,
    )
    cancelled = sm.cancel_rotate_secret(SecretId=name)
    assert cancelled["Name"] == name
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is False
    assert "NextRotationDate" not in described
    # the previous configuration is still shown
    assert described["RotationRules"] == {"AutomaticallyAfterDays": 5}
    assert described["RotationLambdaARN"] == LAMBDA
    # turning it back on
    sm.rotate_secret(SecretId=name, RotateImmediately=False)
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert "NextRotationDate" in described


def test_cancel_reports_the_pending_version(sm: Any) -> None:
    name = secret_name("rotation")
    sm.create_secret(Name=name, SecretString="v")
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=LAMBDA,
        RotationRules={"AutomaticallyAfterDays": 5},
        RotateImmediately=False,
    )
    pending = sm.put_secret_value(SecretId=name, SecretString="half-done", VersionStages=["AWSPENDING"])
    assert sm.cancel_rotate_secret(SecretId=name)["VersionId"] == pending["VersionId"]
