"""HTML rendering: Jinja2 templates shipped in the package, autoescaped, strict about missing values.

Filters the templates share turn the API's values into what a person reads: times in UTC, the time
left before a scheduled deletion, JSON documents indented.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def when(value: Any) -> str:
    """A datetime or epoch seconds as ``2026-12-06 11:00:00 UTC`` ("" for none)."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def countdown(value: Any, now: datetime | None = None) -> str:
    """How long until ``value`` (a datetime), as "6 days 3 hours" / "42 minutes" / "now"."""
    if not isinstance(value, datetime):
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = int((value - (now or datetime.now(UTC))).total_seconds())
    if seconds <= 0:
        return "now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} day{'s' * (days != 1)} {hours} hour{'s' * (hours != 1)}"
    if hours:
        return f"{hours} hour{'s' * (hours != 1)} {minutes} minute{'s' * (minutes != 1)}"
    return f"{max(minutes, 1)} minute{'s' * (minutes > 1)}"


def pretty_json(value: Any) -> str:
    """A JSON document (a string or a parsed value) indented; text that is not JSON as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


class Templates:
    def __init__(self) -> None:
        self.environment = Environment(
            loader=PackageLoader("khoa.webconsole", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.filters.update(when=when, countdown=countdown, pretty_json=pretty_json)

    def render(self, name: str, values: dict[str, Any]) -> bytes:
        return self.environment.get_template(name).render(**values).encode()
