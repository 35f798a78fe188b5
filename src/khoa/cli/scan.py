"""``khoa scan PATH... [--history] [--format text|json|sarif] [--baseline FILE] [--respond]``.

Pinned (docs/architecture.md, section 6). It reaches Khoa the way the aws CLI does: ``--endpoint-url``
or ``AWS_ENDPOINT_URL``, and the standard credential chain (``AWS_ACCESS_KEY_ID``…, ``AWS_PROFILE`` or
``--profile``). Exit codes: 0 nothing found, 1 something found, 2 a usage, connection or permission
error (one line on standard error).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from khoa.cli.common import USAGE, CliError, format_option, khoa_version, stdout_console, usage_error
from khoa.scan.check import KhoaError, LeakChecker, make_client
from khoa.scan.detect import BaselineError, detector, load_baseline
from khoa.scan.report import render_json, render_sarif, render_text
from khoa.scan.scanner import ScanOptions, history_targets, run_scan, source_url
from khoa.scan.sources import SourceError


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH", help="Files, directories or git repositories to scan.", show_default=False
        ),
    ],
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            metavar="",
            help="Also scan every commit reachable from HEAD and report the commit that introduced a value.",
        ),
    ] = False,
    output: Annotated[OutputFormat, format_option(OutputFormat)] = OutputFormat.text,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            metavar="FILE",
            help="A detect-secrets .secrets.baseline: its plugins and filters are used and its results "
            "are accepted generic findings (values Khoa holds are always reported).",
        ),
    ] = None,
    respond: Annotated[
        bool,
        typer.Option(
            "--respond",
            metavar="",
            help="Report what is found (ReportLeakedValues): Khoa quarantines live access keys, "
            "emergency-rotates secrets and raises alerts.",
        ),
    ] = False,
    endpoint_url: Annotated[
        str | None,
        typer.Option("--endpoint-url", metavar="URL", help="Khoa's endpoint (default: AWS_ENDPOINT_URL)."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", metavar="NAME", help="A named profile (default: AWS_PROFILE).")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", metavar="REGION", help="Region to sign for (default: us-east-1)."),
    ] = None,
) -> None:
    """Find leaked secrets: values Khoa holds (live or former) and generic secret patterns."""
    for path in paths:
        if not path.exists():
            raise usage_error(f"{path} does not exist: give files, directories or repositories to scan")
    baseline_data = None
    if baseline is not None:
        try:
            baseline_data = load_baseline(str(baseline))
        except BaselineError as exc:
            raise usage_error(f"--baseline {baseline}: {exc}") from None
    try:
        if history:
            history_targets(list(paths))  # every path must be in a repository: say so before connecting
        client = make_client(endpoint_url, profile, region)
        checker = LeakChecker(client, respond=respond, source_url=source_url(paths) if respond else "")
        with detector(baseline_data, baseline.name if baseline else "") as found:
            report = run_scan(ScanOptions(paths=list(paths), history=history), found, checker)
    except (KhoaError, SourceError) as exc:
        raise CliError(str(exc), USAGE) from None
    except BaselineError as exc:
        raise usage_error(f"--baseline {baseline}: {exc}") from None
    if output is OutputFormat.json:
        print(render_json(report))
    elif output is OutputFormat.sarif:
        print(render_sarif(report, khoa_version()))
    else:
        render_text(report, stdout_console())
    if report.findings:
        raise typer.Exit(1)
