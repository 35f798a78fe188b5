"""``khoa review [--data-dir D | --database-url URL] [--account ID] [--format text|json|sarif|markdown]
[--fail-on low|medium|high]``: the design-review checklist, evaluated against the installation.

An operator command like ``khoa audit verify``: it opens the installation's database (read only; also
while the server runs), runs every rule of :mod:`khoa.review.rules` and prints the findings. Exit codes:
0 when no finding is at or above ``--fail-on`` (default high), 1 when one is (or the installation cannot
be read), 2 for a usage error.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from khoa.cli.common import (
    DatabaseUrl,
    DataDir,
    check_account_id,
    format_option,
    installation,
    installation_settings,
    khoa_version,
    require_account,
    usage_error,
)
from khoa.review.snapshot import DEFAULT_NAMING_PATTERN, Options

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from khoa.crypto.barrier import Barrier
    from khoa.settings import Settings


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"
    markdown = "markdown"


class Threshold(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def _moment(value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise usage_error(f"--at {value!r} is not an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def review(
    account: Annotated[
        str | None,
        typer.Option(
            "--account",
            metavar="ID",
            callback=check_account_id,
            help="Review this account only (12 digits) \\[default: every account].",
        ),
    ] = None,
    output: Annotated[OutputFormat, format_option(OutputFormat)] = OutputFormat.text,
    fail_on: Annotated[
        Threshold,
        typer.Option(
            "--fail-on", metavar="low|medium|high", help="Exit 1 when a finding is at or above this severity."
        ),
    ] = Threshold.high,
    naming_pattern: Annotated[
        str | None,
        typer.Option(
            "--naming-pattern",
            metavar="REGEX",
            help="Secret names must match this regular expression \\[default: KHOA_REVIEW_NAMING_PATTERN, "
            "else <env>/<app>/<kind>/<name>].",
        ),
    ] = None,
    unused_days: Annotated[
        float | None,
        typer.Option(
            "--unused-days",
            metavar="N",
            min=0,
            help="unused-access: allowed but unused for N days "
            "\\[default: KHOA_REVIEW_UNUSED_DAYS, else 90].",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Evaluate as at this time (ISO 8601) \\[default: now]."),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Evaluate the design-review checklist against the installation (docs/review.md lists the rules)."""
    # The rules bring detect-secrets and the services' schedules: loaded only when a review runs.
    from khoa.review import render
    from khoa.review.model import Severity
    from khoa.review.runner import run_review

    now = _moment(at)
    settings = installation_settings(data_dir, database_url)
    pattern = naming_pattern or settings.review_naming_pattern or DEFAULT_NAMING_PATTERN
    try:
        re.compile(pattern)
    except re.error as exc:
        raise usage_error(f"--naming-pattern {pattern!r} is not a regular expression: {exc}") from None
    days = unused_days if unused_days is not None else settings.review_unused_days
    options = Options(account=account, naming_pattern=pattern, unused_days=days)
    with installation(settings) as engine:
        if account is not None:
            require_account(engine, account)
        result = run_review(engine, settings, options, now, barrier=_barrier(settings, engine))
    if output is OutputFormat.json:
        print(render.as_json(result))
    elif output is OutputFormat.sarif:
        print(render.as_sarif(result, khoa_version()))
    elif output is OutputFormat.markdown:
        print(render.as_markdown(result))
    else:
        print(render.as_text(result))
    if result.at_or_above(Severity.parse(fail_on.value)):
        raise typer.Exit(1)


def _barrier(settings: Settings, engine: Engine) -> Barrier | None:
    """The root key where this machine holds it (the file seal), for the trail rule to trust only the
    keys it vouches for; None elsewhere (a Shamir seal: the rule then reads the database's keys)."""
    from khoa.bootstrap import load_barrier
    from khoa.crypto.seal import SealError

    try:
        return load_barrier(settings, engine, create=False)
    except SealError:
        return None
