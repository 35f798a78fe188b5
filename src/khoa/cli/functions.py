"""``khoa functions`` — register the rotation functions secrets name as RotationLambdaARN."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from khoa.bootstrap import load_barrier
from khoa.cli.common import installation_settings
from khoa.crypto.seal import SealError
from khoa.secret_rotation import functions
from khoa.settings import DEFAULT_REGION
from khoa.storage.database import create_database_engine, migrate

app = typer.Typer(help="Rotation functions (what RotationLambdaARN names).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Function name: the NAME in arn:aws:lambda:R:A:function:NAME.")],
    account: Annotated[str, typer.Option(help="Account the function belongs to.")],
    region: Annotated[str, typer.Option(help="Region the function belongs to.")] = DEFAULT_REGION,
    builtin: Annotated[
        str | None, typer.Option(help=f"Built-in rotator: {', '.join(functions.BUILTINS)}.")
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="A Python callable, module:function(event, client).")
    ] = None,
    http: Annotated[
        str | None, typer.Option(help="An http(s) URL receiving each step as a JSON POST.")
    ] = None,
    hmac_secret: Annotated[
        str | None, typer.Option(help="Key for the X-Khoa-Signature header (http).")
    ] = None,
    role: Annotated[str | None, typer.Option(help="IAM role ARN the function acts as.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds an http function may take per step.")] = 30.0,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default .khoa).")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Database URL instead of the data directory.")
    ] = None,
) -> None:
    """Register (or replace) a rotation function."""
    chosen = [
        (kind, target)
        for kind, target in (("builtin", builtin), ("python", python), ("http", http))
        if target
    ]
    if len(chosen) != 1:
        err.print("[red]give exactly one of --builtin, --python or --http[/red]")
        raise typer.Exit(2)
    kind, target = chosen[0]
    settings = installation_settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        sealed = None
        if hmac_secret:
            barrier = load_barrier(settings, engine, create=False)
            sealed = barrier.seal(hmac_secret.encode(), functions.hmac_binding(account, region, name))
        functions.register(
            engine,
            account_id=account,
            region=region,
            name=name,
            kind=kind,
            target=target or "",
            role_arn=role,
            secret_sealed=sealed,
            timeout_seconds=timeout,
            now=time.time(),
        )
    except (functions.FunctionError, SealError) as exc:
        err.print(f"[red]cannot register:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    out.print(f"Registered arn:aws:lambda:{region}:{account}:function:{name} ({kind} {target})")


@app.command("list")
def list_functions(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default .khoa).")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Database URL instead of the data directory.")
    ] = None,
) -> None:
    """List registered rotation functions."""
    settings = installation_settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        registered = functions.list_functions(engine)
    finally:
        engine.dispose()
    table = Table("ARN", "Kind", "Target", "Role")
    for function in registered:
        table.add_row(function.arn, function.kind, function.target, function.role_arn or "-")
    out.print(table)
