"""``khoa audit`` — read the audit trail from the database (works while a server runs)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import Engine, func, select

from khoa.cli.common import CliError, DatabaseUrl, DataDir, installation, installation_settings
from khoa.storage import schema

app = typer.Typer(help="Inspect the audit trail.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False, emoji=False)

_EVENTS = schema.audit_events
_BATCH = 500


# -- tail -----------------------------------------------------------------------------------------


def printable(value: object) -> str:
    """``value`` as text safe for a terminal: every character that is not printable (C0 and C1
    controls such as ESC, which start the escape sequences that move the cursor, erase lines or set
    the window title; bidirectional and other format characters; line separators) is shown as its
    Python escape (``\\x1b``, ``\\u202e``). Records hold what callers sent (a claimed access key id, a
    user agent, an operation name), and the trail keeps it verbatim, JSON-escaped; only its display
    is made harmless here."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def principal_of(identity: dict[str, Any]) -> str:
    """A short name for who acted: ``root``, ``user/alice``, ``assumed-role/R/session``, a service."""
    if identity.get("invokedBy"):
        return printable(identity["invokedBy"])
    arn = identity.get("arn")
    if isinstance(arn, str) and ":" in arn:
        return printable(arn.rsplit(":", 1)[1])
    key = identity.get("accessKeyId")
    return f"unknown ({printable(key)})" if key else "unknown"


def format_event(record: dict[str, Any]) -> Text:
    """One line: time, account, principal, source:name, outcome and the first resource. Every field
    goes through :func:`printable`: nothing a caller sent reaches the terminal as a control code."""
    source = printable(record.get("eventSource", "")).removesuffix(".amazonaws.com")
    error = record.get("errorCode")
    identity = record.get("userIdentity")
    line = Text(no_wrap=True)
    line.append(printable(record.get("eventTime", "")), style="dim")
    line.append("  ")
    line.append(printable(record.get("recipientAccountId", "")), style="cyan")
    line.append("  ")
    line.append(principal_of(identity if isinstance(identity, dict) else {}).ljust(24), style="yellow")
    line.append("  ")
    line.append(f"{source}:{printable(record.get('eventName', ''))}", style="bold")
    line.append("  ")
    line.append(printable(error) if error else "OK", style="bold red" if error else "green")
    resources = record.get("resources")
    first = resources[0] if isinstance(resources, list) and resources else None
    if isinstance(first, dict):
        line.append("  ")
        line.append(printable(first.get("ARN", "")), style="dim")
    return line


def _matches(raw: str, record: dict[str, Any], needle: str | None) -> bool:
    if not needle:
        return True
    needle = needle.lower()
    return needle in raw.lower() or needle in format_event(record).plain.lower()


def _recent(engine: Engine, count: int, needle: str | None) -> tuple[list[dict[str, Any]], int]:
    """The last ``count`` matching records (oldest first) and the trail's highest sequence number."""
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0
    found: list[dict[str, Any]] = []
    before = newest + 1
    while len(found) < count:
        with engine.connect() as conn:
            rows = conn.execute(
                select(_EVENTS.c.seq, _EVENTS.c.record)
                .where(_EVENTS.c.seq < before)
                .order_by(_EVENTS.c.seq.desc())
                .limit(_BATCH)
            ).all()
        if not rows:
            break
        before = rows[-1].seq
        for row in rows:
            record = json.loads(row.record)
            if _matches(row.record, record, needle):
                found.append(record)
                if len(found) == count:
                    break
    return found[::-1], newest


def _follow(engine: Engine, after: int, needle: str | None, interval: float) -> Iterator[dict[str, Any]]:
    """Records added after ``after``, as they arrive. A record is shown one poll after it appears, so
    a mutating call (recorded before it runs) is shown with its outcome."""
    seen = after
    while True:
        time.sleep(interval)
        with engine.connect() as conn:
            rows = conn.execute(
                select(_EVENTS.c.seq, _EVENTS.c.record).where(_EVENTS.c.seq > after).order_by(_EVENTS.c.seq)
            ).all()
        for row in rows:
            if row.seq > seen:
                break
            after = row.seq
            record = json.loads(row.record)
            if _matches(row.record, record, needle):
                yield record
        if rows:
            seen = rows[-1].seq


@app.command()
def tail(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", metavar="", help="Keep printing new events.")
    ] = False,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter", metavar="TEXT", help="Only events whose record or line contains TEXT (any case)."
        ),
    ] = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", metavar="N", min=0, help="Recent events to show first.")
    ] = 20,
    interval: Annotated[float, typer.Option(hidden=True, min=0.05)] = 1.0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print recent audit events, one line each: time, account, principal, event, outcome."""
    settings = installation_settings(data_dir, database_url)
    try:
        with installation(settings) as engine:
            records, newest = _recent(engine, lines, filter_text)
            for record in records:
                out.print(format_event(record))
            if follow:
                for record in _follow(engine, newest, filter_text, interval):
                    out.print(format_event(record))
    except KeyboardInterrupt:
        pass
    except CliError as exc:
        raise CliError(f"cannot read the audit trail: {exc.message}", exc.exit_code) from None


# -- integrity (CloudTrail log file validation): digest, verify, public-keys ----------------------
from khoa.cli.audit_trail import digest, export, public_keys_command, verify  # noqa: E402

app.command("digest")(digest)
app.command("verify")(verify)
app.command("export")(export)
app.command("public-keys")(public_keys_command)
