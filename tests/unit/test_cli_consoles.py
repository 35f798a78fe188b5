"""The command line's Rich consoles print values verbatim: a secret's ARN holds ``:secret:``, which a
console with emoji codes on prints as a picture (and highlighting would colour parts of it)."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from khoa.cli import alerts, audit, audit_trail
from khoa.cli.common import print_list, stderr_console, stdout_console

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db:smile:-AbCdEf"


def test_a_default_console_would_change_the_arn() -> None:
    """What the consoles below must not do (if Rich ever drops the emoji, the other tests still hold)."""
    buffer = io.StringIO()
    Console(file=buffer).print(ARN)
    assert ARN not in buffer.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_stdout_console_prints_an_arn_verbatim(
    terminal: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    stdout_console().print(ARN)
    assert capsys.readouterr().out.strip() == ARN


def test_stderr_console_prints_an_arn_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    stderr_console().print(f"cannot rotate {ARN}")
    assert capsys.readouterr().err.strip() == f"cannot rotate {ARN}"


def test_list_tables_print_an_arn_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    print_list([{"Name": "db", "ARN": ARN}], ("Name", "ARN"), as_json=False, empty="none")
    out = capsys.readouterr().out
    assert any(ARN in line for line in out.splitlines()), out


@pytest.mark.parametrize("console", [audit.out, audit_trail.out, audit_trail.err, alerts.out])
def test_module_consoles_print_an_arn_verbatim(console: Console) -> None:
    buffer = io.StringIO()
    original = console.file
    console.file = buffer
    try:
        console.print(ARN)
    finally:
        console.file = original
    assert buffer.getvalue().strip() == ARN
