"""Secrets Manager rotation schedules: validation of rate()/cron()/Duration and the next window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import schedule

NOON = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)  # a Tuesday


def invalid(rules: dict[str, Any]) -> str:
    with pytest.raises(AWSError) as info:
        schedule.validate(rules)
    return info.value.code


@pytest.mark.parametrize(
    "rules",
    [
        {"AutomaticallyAfterDays": 1},
        {"AutomaticallyAfterDays": 1000},
        {"ScheduleExpression": "rate(4 hours)"},
        {"ScheduleExpression": "rate(23 hours)", "Duration": "23h"},
        {"ScheduleExpression": "rate(1 day)"},
        {"ScheduleExpression": "rate(999 days)", "Duration": "24h"},
        {"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "2h"},
        {"ScheduleExpression": "cron(0 4/12 * * ? *)"},
        {"ScheduleExpression": "cron(0 0 ? * SUN#1 *)"},
        {"ScheduleExpression": "cron(0 16 L * ? *)"},
        {"ScheduleExpression": "cron(0 8 ? * 2-6 *)"},
        {"ScheduleExpression": "cron(0 10 ? * 5L *)", "Duration": "14h"},
        {"ScheduleExpression": "cron(0 8 1/7 JAN-JUN ? *)"},
    ],
)
def test_valid_rules(rules: dict[str, Any]) -> None:
    schedule.validate(rules)


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {"AutomaticallyAfterDays": 5, "ScheduleExpression": "rate(5 days)"},
        {"AutomaticallyAfterDays": 0},
        {"AutomaticallyAfterDays": 1001},
        {"ScheduleExpression": "rate(3 hours)"},  # more often than every four hours
        {"ScheduleExpression": "rate(24 hours)"},
        {"ScheduleExpression": "rate(1000 days)"},
        {"ScheduleExpression": "rate(5 minutes)"},
        {"ScheduleExpression": "rate(6 hours)", "Duration": "7h"},  # runs into the next window
        {"ScheduleExpression": "rate(1 day)", "Duration": "25h"},
        {"ScheduleExpression": "rate(1 day)", "Duration": "0h"},
        {"ScheduleExpression": "rate(1 day)", "Duration": "3"},
        {"ScheduleExpression": "every day"},
        {"ScheduleExpression": "cron(0 16 1 * *)"},  # five fields
        {"ScheduleExpression": "cron(30 16 1 * ? *)"},  # minutes must be 0
        {"ScheduleExpression": "cron(0 16 1 * ? 2030)"},  # year must be *
        {"ScheduleExpression": "cron(0 16 1 * MON *)"},  # one of the day fields must be ?
        {"ScheduleExpression": "cron(0 16 ? * ? *)"},  # ... but not both
        {"ScheduleExpression": "cron(0 25 ? * MON *)"},
        {"ScheduleExpression": "cron(0 16 ? * 8 *)"},
        {"ScheduleExpression": "cron(0 20 ? * MON *)", "Duration": "5h"},  # into the next UTC day
        {"ScheduleExpression": "cron(0 4/6 * * ? *)", "Duration": "7h"},  # into the next window
    ],
)
def test_invalid_rules(rules: dict[str, Any]) -> None:
    assert invalid(rules) == "InvalidParameterException"


def test_days_window_opens_at_midnight_and_ends_with_the_day() -> None:
    start, end = schedule.next_window({"AutomaticallyAfterDays": 7}, NOON)
    assert start == datetime(2026, 3, 17, tzinfo=UTC)
    assert end == datetime(2026, 3, 18, tzinfo=UTC)
    # the stored date is when the window opens (a scheduled rotation is due); NextRotationDate is its end
    rules = {"ScheduleExpression": "rate(7 days)"}
    opens = schedule.next_rotation(rules, NOON)
    assert opens == datetime(2026, 3, 17, tzinfo=UTC)
    assert schedule.rotation_date(rules, opens) == datetime(2026, 3, 17, 23, 59, 59, tzinfo=UTC)
    rules = {"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "2h"}
    assert schedule.rotation_date(rules, schedule.next_rotation(rules, NOON)) == datetime(
        2026, 3, 15, 17, 59, 59, tzinfo=UTC
    )
    start, end = schedule.next_window({"ScheduleExpression": "rate(2 days)", "Duration": "3h"}, NOON)
    assert (start, end) == (datetime(2026, 3, 12, tzinfo=UTC), datetime(2026, 3, 12, 3, tzinfo=UTC))


def test_hours_windows_restart_each_day() -> None:
    start, end = schedule.next_window({"ScheduleExpression": "rate(5 hours)"}, NOON)
    assert start == datetime(2026, 3, 10, 15, tzinfo=UTC)
    assert end - start == timedelta(hours=1)
    late = datetime(2026, 3, 10, 21, 0, 1, tzinfo=UTC)  # windows at 0, 5, 10, 15, 20
    assert schedule.next_window({"ScheduleExpression": "rate(5 hours)"}, late)[0] == datetime(
        2026, 3, 11, tzinfo=UTC
    )


def test_cron_windows() -> None:
    start, end = schedule.next_window({"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "2h"}, NOON)
    assert (start, end) == (datetime(2026, 3, 15, 16, tzinfo=UTC), datetime(2026, 3, 15, 18, tzinfo=UTC))
    # a schedule in days stays open to the end of the day by default
    start, end = schedule.next_window({"ScheduleExpression": "cron(0 8 ? * MON *)"}, NOON)
    assert (start, end) == (datetime(2026, 3, 16, 8, tzinfo=UTC), datetime(2026, 3, 17, tzinfo=UTC))
    # a schedule in hours closes after an hour
    start, end = schedule.next_window({"ScheduleExpression": "cron(0 4/12 * * ? *)"}, NOON)
    assert (start, end) == (datetime(2026, 3, 10, 16, tzinfo=UTC), datetime(2026, 3, 10, 17, tzinfo=UTC))
    # AWS numbers days of the week from 1 (Sunday): 2#2 is the second Monday, 6L the last Friday
    assert schedule.next_window({"ScheduleExpression": "cron(0 0 ? * 2#2 *)"}, NOON)[0] == datetime(
        2026, 4, 13, tzinfo=UTC
    )
    assert schedule.next_window({"ScheduleExpression": "cron(0 0 ? * 6L *)"}, NOON)[0] == datetime(
        2026, 3, 27, tzinfo=UTC
    )
    assert schedule.next_window({"ScheduleExpression": "cron(0 9 ? * SUN *)"}, NOON)[0] == datetime(
        2026, 3, 15, 9, tzinfo=UTC
    )
