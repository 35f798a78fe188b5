"""Rotation schedules: ``AutomaticallyAfterDays``, ``rate()`` and AWS's six-field ``cron()``, with
``Duration`` windows, validated as Secrets Manager validates them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from khoa.services.secretsmanager import errors

_RATE = re.compile(r"^rate\((\d+) (hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_DURATION = re.compile(r"^(\d+)h$")
_DAY_NAMES = {"SUN": "0", "MON": "1", "TUE": "2", "WED": "3", "THU": "4", "FRI": "5", "SAT": "6"}


def _cron_to_croniter(expression: str) -> str:
    """AWS cron is ``min hour day-of-month month day-of-week year`` with 1=SUN; croniter wants five
    fields with 0=SUN."""
    fields = expression.split()
    if len(fields) != 6:
        raise errors.invalid_parameter(
            "Invalid cron expression: it must have six fields "
            "(minutes hours day-of-month month day-of-week year)."
        )
    minute, hour, dom, month, dow, year = fields
    if year not in ("*", "?") and not re.fullmatch(r"[0-9,\-/*]+", year):
        raise errors.invalid_parameter("Invalid cron expression: bad year field.")
    if "?" not in (dom, dow):
        raise errors.invalid_parameter(
            "Invalid cron expression: one of day-of-month and day-of-week must be ?."
        )

    def shift_dow(value: str) -> str:
        if value in ("?", "*"):
            return "*"
        out = value.upper()
        for name, number in _DAY_NAMES.items():
            out = out.replace(name, number) if not re.search(r"\d", value) else out
        return re.sub(r"(?<![#/])\b([1-7])\b", lambda m: str(int(m.group(1)) - 1), out)

    return " ".join([minute, hour, "*" if dom == "?" else dom, month, shift_dow(dow)])


def validate(rules: dict[str, Any]) -> None:
    days = rules.get("AutomaticallyAfterDays")
    expression = rules.get("ScheduleExpression")
    if days is not None and expression is not None:
        raise errors.invalid_parameter(
            "You can't specify both AutomaticallyAfterDays and ScheduleExpression."
        )
    if days is None and expression is None:
        raise errors.invalid_parameter("You must specify AutomaticallyAfterDays or ScheduleExpression.")
    if days is not None and not 1 <= days <= 1000:
        raise errors.invalid_parameter("AutomaticallyAfterDays must be between 1 and 1000.")
    window_hours = 24
    if expression is not None:
        rate = _RATE.match(expression)
        cron = _CRON.match(expression)
        if rate:
            amount, unit = int(rate.group(1)), rate.group(2)
            if unit.startswith("hour") and not 4 <= amount <= 23:
                raise errors.invalid_parameter("A rate in hours must be between 4 and 23 hours.")
            if unit.startswith("day") and not 1 <= amount <= 1000:
                raise errors.invalid_parameter("A rate in days must be between 1 and 1000 days.")
            if unit.startswith("hour"):
                window_hours = amount
        elif cron:
            converted = _cron_to_croniter(cron.group(1))
            if not croniter.is_valid(converted):
                raise errors.invalid_parameter(f"Invalid cron expression: {cron.group(1)}")
        else:
            raise errors.invalid_parameter("ScheduleExpression must be a rate() or cron() expression.")
    duration = rules.get("Duration")
    if duration is not None:
        match = _DURATION.match(duration)
        if not match or not 1 <= int(match.group(1)) <= 24:
            raise errors.invalid_parameter("Duration must be between 1h and 24h, for example 3h.")
        if int(match.group(1)) > window_hours:
            raise errors.invalid_parameter(
                "The rotation window must not extend into the next rotation window."
            )


def next_rotation(rules: dict[str, Any], last: datetime) -> datetime:
    """When the next rotation window starts, counted from the last rotation (or creation)."""
    days = rules.get("AutomaticallyAfterDays")
    if days is not None:
        return last + timedelta(days=days)
    expression: str = rules["ScheduleExpression"]
    rate = _RATE.match(expression)
    if rate:
        amount, unit = int(rate.group(1)), rate.group(2)
        if unit.startswith("hour"):
            return last + timedelta(hours=amount)
        start = datetime(last.year, last.month, last.day, tzinfo=UTC)
        return start + timedelta(days=amount)
    cron = _CRON.match(expression)
    assert cron is not None
    nxt: datetime = croniter(_cron_to_croniter(cron.group(1)), last).get_next(datetime)
    return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)
