"""Scheduled rotation with an advanced clock: AutomaticallyAfterDays, ``rate(N hours|days)`` and
``cron(...)`` with Duration windows. A rotation starts when its window opens and not a minute before;
after it, LastRotatedDate is the rotation's time and NextRotationDate the end of the next window.

The server's test clock only moves forward, so every test works from the server's current time.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.services.secretsmanager import schedule
from tests.support.rotation import holder, register, stages_of, value_of
from tests.support.server import KhoaServer


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("rotation-schedule") / "data").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def function(own_server: KhoaServer) -> str:
    return register(own_server, "scheduled", "tests.support.rotators:simple")


@pytest.fixture
def name(own_server: KhoaServer) -> Iterator[str]:
    """A name for the test's secret, which is deleted afterwards: a secret left with a schedule would
    come due in later tests (each moves the clock on by days) and make their passes rotate it too."""
    chosen = f"scheduled/{uuid.uuid4().hex[:8]}"
    yield chosen
    with contextlib.suppress(ClientError):
        own_server.client("secretsmanager").delete_secret(SecretId=chosen, ForceDeleteWithoutRecovery=True)


def server_now(server: KhoaServer) -> datetime:
    return server.clock_now().astimezone(UTC)


def advance_to(server: KhoaServer, moment: datetime) -> None:
    seconds = (moment - server_now(server)).total_seconds()
    assert seconds >= 0, f"the clock is already past {moment}"
    server.advance_clock(seconds)


def window_opening(described: dict[str, Any]) -> datetime:
    """When the window whose last second is NextRotationDate opens."""
    window = schedule.parse(described["RotationRules"]).window
    closing: datetime = described["NextRotationDate"].astimezone(UTC)
    return closing + timedelta(seconds=1) - window


RULES = [
    {"AutomaticallyAfterDays": 2},
    {"ScheduleExpression": "rate(6 hours)"},
    {"ScheduleExpression": "rate(5 hours)", "Duration": "2h"},
    {"ScheduleExpression": "rate(3 days)", "Duration": "4h"},
    {"ScheduleExpression": "cron(0 10 ? * MON *)", "Duration": "3h"},
    {"ScheduleExpression": "cron(0 4/8 * * ? *)"},
    {"ScheduleExpression": "cron(0 16 1,15 * ? *)"},
]


@pytest.mark.parametrize("rules", RULES, ids=[json.dumps(r) for r in RULES])
def test_rotation_starts_when_due_and_not_before(
    own_server: KhoaServer, function: str, name: str, rules: dict[str, Any]
) -> None:
    sm = own_server.client("secretsmanager")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))["VersionId"]
    configured_at = server_now(own_server)
    sm.rotate_secret(SecretId=name, RotationLambdaARN=function, RotationRules=rules, RotateImmediately=False)
    described = sm.describe_secret(SecretId=name)
    opens = window_opening(described)
    assert opens == schedule.next_rotation(rules, configured_at)
    assert described["NextRotationDate"].astimezone(UTC) == schedule.rotation_date(rules, opens)
    assert opens > configured_at
    assert "LastRotatedDate" not in described

    current = first
    for _ in range(2):  # this window, and the one the rotation schedules next
        advance_to(own_server, opens - timedelta(minutes=1))
        own_server.run_jobs()
        assert holder(stages_of(sm, name), "AWSCURRENT") == current, f"rotated before {opens}"
        own_server.advance_clock(2 * 60)
        rotated_at = server_now(own_server)
        own_server.run_jobs()
        stages = stages_of(sm, name)
        assert holder(stages, "AWSCURRENT") != current, f"not rotated once {opens} came"
        assert holder(stages, "AWSPREVIOUS") == current and holder(stages, "AWSPENDING") is None
        current = holder(stages, "AWSCURRENT")
        described = sm.describe_secret(SecretId=name)
        assert abs(described["LastRotatedDate"].astimezone(UTC) - rotated_at) < timedelta(seconds=5)
        next_opens = window_opening(described)
        assert next_opens == schedule.next_rotation(rules, described["LastRotatedDate"].astimezone(UTC))
        assert next_opens > opens + timedelta(hours=1)
        opens = next_opens
    assert value_of(sm, name)["password"] != "v0"


def test_rotate_immediately_counts_as_the_last_rotation(
    own_server: KhoaServer, function: str, name: str
) -> None:
    sm = own_server.client("secretsmanager")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))["VersionId"]
    rules = {"ScheduleExpression": "rate(10 days)"}
    sm.rotate_secret(SecretId=name, RotationLambdaARN=function, RotationRules=rules)
    own_server.run_jobs()
    now = server_now(own_server)
    described = sm.describe_secret(SecretId=name)
    assert holder(stages_of(sm, name), "AWSCURRENT") != first
    assert abs(described["LastRotatedDate"].astimezone(UTC) - now) < timedelta(seconds=30)
    assert window_opening(described) == schedule.next_rotation(rules, now)
    # nine days on, nothing is due yet
    own_server.advance_clock(9 * 86400)
    own_server.run_jobs()
    assert sm.describe_secret(SecretId=name)["LastRotatedDate"] == described["LastRotatedDate"]


def test_cancelled_rotation_is_not_scheduled(own_server: KhoaServer, function: str, name: str) -> None:
    sm = own_server.client("secretsmanager")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 1},
        RotateImmediately=False,
    )
    sm.cancel_rotate_secret(SecretId=name)
    own_server.advance_clock(3 * 86400)
    own_server.run_jobs()
    assert holder(stages_of(sm, name), "AWSCURRENT") == first
    assert "NextRotationDate" not in sm.describe_secret(SecretId=name)
