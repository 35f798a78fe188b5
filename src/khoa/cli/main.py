"""``khoa`` — run the server and administer an installation."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from khoa.bootstrap import ensure_first_account, load_barrier
from khoa.cli.account import app as account_app
from khoa.cli.alerts import app as alerts_app
from khoa.cli.audit import app as audit_app
from khoa.cli.functions import app as functions_app
from khoa.cli.webhooks import app as webhooks_app
from khoa.crypto.seal import SealError
from khoa.settings import Settings
from khoa.storage.database import create_database_engine, migrate

app = typer.Typer(help="Khoa: self-hosted AWS-compatible key and secrets management.", no_args_is_help=True)
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Khoa: self-hosted AWS-compatible key and secrets management."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(settings: Settings) -> None:
    """Migrate, load (or create) the root key and create the first account. Runs once per start."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        barrier = load_barrier(settings, engine, create=True)
        account = ensure_first_account(settings, engine, barrier)
    finally:
        engine.dispose()
    if account is not None:
        err.print(
            f"[bold]Created account {account.account_id}[/bold] with root credentials "
            f"(shown once; also in {settings.data_dir / 'root-credentials'}):"
        )
        print(f"AWS_ACCESS_KEY_ID={account.access_key_id}")
        print(f"AWS_SECRET_ACCESS_KEY={account.secret_access_key}")
        sys.stdout.flush()


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 9440].")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory for the database, root key and audit trail [default: .khoa]."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (sqlite:/// or postgresql+psycopg://).")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes [default: 1].")] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development mode: loopback only, no signature "
            "checks, every caller is the first account's root.",
        ),
    ] = False,
    tls_cert: Annotated[str | None, typer.Option(help="PEM certificate for HTTPS.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM private key for HTTPS.")] = None,
) -> None:
    """Start the Khoa server."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "workers": workers,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    if dev:
        overrides["dev"] = True
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        err.print(f"[red]cannot start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if not settings.audit_enabled and not settings.dev:
        # The trail is fail-closed: no call is answered unless its record is durable. Turning it off is
        # for measuring its cost (bench/run.py), on a loopback-only dev server.
        err.print("[red]cannot start:[/red] KHOA_AUDIT=0 is allowed only with --dev", soft_wrap=True)
        raise typer.Exit(2)
    if settings.dev and not _is_loopback(settings.host):
        err.print("[red]--dev binds to loopback only[/red]: it accepts any credentials.")
        raise typer.Exit(2)
    if os.environ.get("KHOA_TEST_CLOCK") and not settings.dev:
        # The test clock hooks it used to expose let anyone destroy keys pending deletion.
        logging.getLogger("khoa").warning(
            "KHOA_TEST_CLOCK is ignored: the clock and job hooks exist only with --dev"
        )
    if settings.dev:
        err.print(
            "[bold red]WARNING: development mode[/bold red] — signatures are NOT checked and every "
            "caller acts as the first account's root. Never expose this server."
        )
    try:
        prepare(settings)
    except SealError as exc:
        err.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from None
    os.environ.update(settings.to_env())
    uvicorn.run(
        "khoa.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        server_header=False,
        # Khoa decides whom to believe about X-Forwarded-For (KHOA_TRUSTED_PROXIES, khoa.network);
        # uvicorn's own proxy-header handling would believe any loopback peer.
        proxy_headers=False,
    )


app.add_typer(account_app, name="account")
app.add_typer(audit_app, name="audit")
app.add_typer(functions_app, name="functions")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(alerts_app, name="alerts")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
