"""``khoa webhooks`` — send secret change events to an HTTP endpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from khoa.bootstrap import load_barrier
from khoa.changes import webhooks
from khoa.cli.common import installation_settings
from khoa.crypto.seal import SealError
from khoa.storage.database import create_database_engine, migrate

app = typer.Typer(help="Webhooks receiving secret change events.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command("register")
def register(
    url: Annotated[str, typer.Argument(help="http(s) URL receiving each event as a JSON POST.")],
    account: Annotated[str, typer.Option(help="Account whose secrets' events are sent.")],
    secret_prefix: Annotated[
        str, typer.Option(help="Only secrets whose ARN starts with this ('*' = all).")
    ] = "*",  # noqa: S107 - an ARN prefix, not a password
    signing_secret: Annotated[
        str | None, typer.Option(help="Key for the X-Khoa-Signature HMAC header.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default .khoa).")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Database URL instead of the data directory.")
    ] = None,
) -> None:
    """Register a webhook; it receives events published from now on."""
    if not url.startswith(("http://", "https://")):
        err.print("[red]the URL must be http(s)[/red]")
        raise typer.Exit(2)
    settings = installation_settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        barrier = load_barrier(settings, engine, create=False)
        webhook_id = webhooks.register(
            engine,
            barrier,
            account_id=account,
            url=url,
            secret=signing_secret,
            secret_prefix=secret_prefix,
            now=time.time(),
        )
    except SealError as exc:
        err.print(f"[red]cannot open the installation:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    out.print(f"Registered webhook {webhook_id} → {url}")
