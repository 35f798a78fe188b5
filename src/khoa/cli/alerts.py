"""``khoa alerts`` — the alerts the server raised (read from the database; works while a server runs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import select

from khoa.cli.common import DatabaseUrl, DataDir, installation, installation_settings
from khoa.storage import schema

app = typer.Typer(help="Alerts raised by the server's rules.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False, emoji=False)
_ALERTS = schema.alerts
_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}


def _parse_since(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _status(row: Any) -> str:
    parts = [
        f"{name}:{status}" for name, status in (("webhook", row.webhook_status), ("slack", row.slack_status))
    ]
    parts.append("audited" if row.audited else "audit:pending")
    return " ".join(p for p in parts if not p.endswith(":None"))


def format_alert(row: Any) -> Text:
    """One line: time, severity, rule, account, summary, then where it was delivered."""
    from khoa.alerts.engine import stored_alert  # imported when used: it loads the service models

    alert = stored_alert(row)
    line = Text(no_wrap=False)
    line.append(alert.raised_at, style="dim")
    line.append("  ")
    line.append(alert.severity.upper().ljust(8), style=_STYLES.get(alert.severity, ""))
    line.append("  ")
    line.append(alert.rule.ljust(24), style="bold")
    line.append("  ")
    line.append(alert.account_id, style="cyan")
    line.append("  ")
    line.append(alert.summary)
    line.append(f"  [{_status(row)}]", style="dim")
    return line


@app.command("list")
def list_alerts(
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME", help="Only alerts raised at or after this ISO 8601 time (default: 7 days ago)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print a JSON array (one object per alert).")
    ] = False,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, help="At most this many (the most recent).")
    ] = 200,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show recent alerts, oldest first."""
    start = _parse_since(since) if since is not None else (datetime.now(UTC) - timedelta(days=7)).timestamp()
    settings = installation_settings(data_dir, database_url)
    with installation(settings) as engine, engine.connect() as conn:
        rows = conn.execute(
            select(_ALERTS)
            .where(_ALERTS.c.raised_at >= start)
            .order_by(_ALERTS.c.raised_at.desc(), _ALERTS.c.alert_id)
            .limit(limit)
        ).all()
    rows = rows[::-1]
    from khoa.alerts.engine import stored_alert
    from khoa.alerts.notifiers import webhook_payload

    if as_json:
        payloads = []
        for row in rows:
            payload = webhook_payload(stored_alert(row))
            payload["delivery"] = {
                "webhook": row.webhook_status,
                "slack": row.slack_status,
                "audited": bool(row.audited),
            }
            payloads.append(payload)
        print(json.dumps(payloads, indent=2))
        return
    if not rows:
        out.print("No alerts.")
        return
    for row in rows:
        out.print(format_alert(row))
