"""Rotation schedules: ``AutomaticallyAfterDays``, ``rate()`` and Secrets Manager's six-field ``cron()``,
with ``Duration`` windows, validated as the Secrets Manager documentation describes them.

Rotation windows always open on the hour (UTC). ``rate(N days)`` and ``AutomaticallyAfterDays`` windows
open at midnight and close at the end of the day; ``rate(N hours)`` windows open every N hours from
midnight and close after an hour; a ``cron()`` window opens at the time it names and closes after an hour
for a schedule in hours, at the end of the day otherwise. ``Duration`` changes the length; a window never
runs into the next one or into the next UTC day. Khoa stores when the next window opens (when a scheduled
rotation is due); NextRotationDate reports that window's last second: the rotation happens "on or
before" it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import errors

_RATE = re.compile(r"^rate\((\d+) (hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_DURATION = re.compile(r"^(\d+)h$")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
MIN_RATE_HOURS = 4
MAX_RATE_DAYS = 999


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: how its windows open, and how long they stay open."""

    kind: str  # "days" (AutomaticallyAfterDays, rate in days), "hours" (rate in hours) or "cron"
    amount: int = 0
    cron: str = ""  # the croniter form of a cron() expression
    window: timedelta = _DAY


def _invalid_cron(expression: str, why: str) -> AWSError:
    return errors.invalid_parameter(f"Invalid cron expression {expression}: {why}")


def _day_of_week(value: str, expression: str) -> str:
    """AWS numbers days 1 (SUN) to 7 (SAT); croniter 0 (SUN) to 6 (SAT). ``5L`` (last Thursday) is
    croniter's ``L4``; ``L`` alone is the last day of the week, Saturday."""

    def day(token: str) -> str:
        upper = token.upper()
        if upper in _DAY_NAMES:
            return str(_DAY_NAMES.index(upper))
        if token.isdigit() and 1 <= int(token) <= 7:
            return str(int(token) - 1)
        raise _invalid_cron(expression, f"{token} is not a day of the week (1-7 or SUN-SAT)")

    if value in ("?", "*"):
        return "*"
    parts = []
    for item in value.split(","):
        if item.upper() == "L":
            parts.append("6")
        elif item.upper().endswith("L"):
            parts.append("L" + day(item[:-1]))
        elif "#" in item:
            weekday, _, nth = item.partition("#")
            parts.append(f"{day(weekday)}#{nth}")
        elif "/" in item:
            start, _, step = item.partition("/")
            parts.append(f"{'*' if start == '*' else day(start)}/{step}")
        elif "-" in item:
            first, _, last = item.partition("-")
            parts.append(f"{day(first)}-{day(last)}")
        else:
            parts.append(day(item))
    return ",".join(parts)


def _cron(expression: str) -> tuple[str, bool]:
    """The croniter form of an AWS cron() body, and whether it is a schedule in hours."""
    fields = expression.split()
    if len(fields) != 6:
        raise _invalid_cron(
            expression, "it must have six fields: Minutes Hours Day-of-month Month Day-of-week Year"
        )
    minute, hour, dom, month, dow, year = fields
    if minute != "0":
        raise _invalid_cron(expression, "the Minutes field must be 0, rotation windows open on the hour")
    if year != "*":
        raise _invalid_cron(expression, "the Year field must be *")
    if (dom == "?") == (dow == "?"):
        raise _invalid_cron(expression, "exactly one of Day-of-month and Day-of-week must be ?")
    if not re.fullmatch(r"[0-9,\-*/]+", hour):
        raise _invalid_cron(expression, "bad Hours field")
    converted = " ".join(["0", hour, "*" if dom == "?" else dom, month, _day_of_week(dow, expression)])
    if not croniter.is_valid(converted):
        raise _invalid_cron(expression, "it is not a valid schedule")
    hourly = not hour.isdigit()
    return converted, hourly


def _hours_of(converted: str) -> list[int]:
    expanded = croniter.expand(converted)[0][1]
    return sorted(int(h) for h in expanded) if "*" not in expanded else list(range(24))


def parse(rules: dict[str, Any]) -> Schedule:
    """Validate RotationRules and describe their windows."""
    days = rules.get("AutomaticallyAfterDays")
    expression: str | None = rules.get("ScheduleExpression")
    if days is not None and expression is not None:
        raise errors.invalid_parameter(
            "You can't specify both AutomaticallyAfterDays and ScheduleExpression."
        )
    if days is None and expression is None:
        raise errors.invalid_parameter("You must specify AutomaticallyAfterDays or ScheduleExpression.")
    duration = _duration(rules.get("Duration"))
    if days is not None:
        if not 1 <= days <= 1000:
            raise errors.invalid_parameter("AutomaticallyAfterDays must be between 1 and 1000.")
        return Schedule("days", amount=days, window=duration or _DAY)
    assert expression is not None
    rate = _RATE.match(expression)
    if rate:
        amount, unit = int(rate.group(1)), rate.group(2)
        if unit.startswith("hour"):
            if not MIN_RATE_HOURS <= amount <= 23:
                raise errors.invalid_parameter(
                    f"A rate in hours must be between {MIN_RATE_HOURS} and 23 hours; use days for longer."
                )
            if duration is not None and duration > timedelta(hours=amount):
                raise errors.invalid_parameter(
                    "The rotation window must not extend into the next rotation window."
                )
            return Schedule("hours", amount=amount, window=duration or _HOUR)
        if not 1 <= amount <= MAX_RATE_DAYS:
            raise errors.invalid_parameter(f"A rate in days must be between 1 and {MAX_RATE_DAYS} days.")
        return Schedule("days", amount=amount, window=duration or _DAY)
    cron = _CRON.match(expression)
    if not cron:
        raise errors.invalid_parameter("ScheduleExpression must be a rate() or cron() expression.")
    converted, hourly = _cron(cron.group(1))
    hours = _hours_of(converted)
    if hourly:
        gaps = [b - a for a, b in itertools.pairwise(hours)] or [24]
        window = duration or _HOUR
        if window > timedelta(hours=min(gaps)):
            raise errors.invalid_parameter(
                "The rotation window must not extend into the next rotation window."
            )
    else:
        window = duration or timedelta(hours=24 - hours[0])
    if timedelta(hours=hours[-1]) + window > _DAY:
        raise errors.invalid_parameter("The rotation window must not extend into the next UTC day.")
    return Schedule("cron", cron=converted, window=window)


def _duration(value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match or not 1 <= int(match.group(1)) <= 24:
        raise errors.invalid_parameter("Duration must be between 1h and 24h, for example 3h.")
    return timedelta(hours=int(match.group(1)))


def validate(rules: dict[str, Any]) -> None:
    parse(rules)


def _midnight(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def next_window(rules: dict[str, Any], after: datetime) -> tuple[datetime, datetime]:
    """The first rotation window that opens after ``after`` (the last rotation, or now)."""
    schedule = parse(rules)
    after = after.astimezone(UTC)
    if schedule.kind == "days":
        start = _midnight(after) + timedelta(days=schedule.amount)
    elif schedule.kind == "hours":
        # windows open every N hours counted from midnight, starting again each day
        start = next(
            day + timedelta(hours=hour)
            for day in (_midnight(after), _midnight(after) + _DAY)
            for hour in range(0, 24, schedule.amount)
            if day + timedelta(hours=hour) > after
        )
    else:
        start = croniter(schedule.cron, after).get_next(datetime)
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    return start, start + schedule.window


def next_rotation(rules: dict[str, Any], after: datetime) -> datetime:
    """When the next rotation window opens: what Khoa stores, and when a scheduled rotation is due."""
    start, _ = next_window(rules, after)
    return start


def rotation_date(rules: dict[str, Any], window_start: datetime) -> datetime:
    """NextRotationDate as DescribeSecret reports it for a window opening at ``window_start``: the last
    second of that window, since the rotation happens "on or before this date"."""
    return window_start + parse(rules).window - timedelta(seconds=1)
