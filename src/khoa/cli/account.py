"""``khoa account`` — create and list accounts directly in the database (works while a server runs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from khoa.bootstrap import create_account, generate_account_id, load_barrier
from khoa.cli.common import DatabaseUrl, DataDir, installation_settings
from khoa.crypto.seal import SealError
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command("create")
def create(
    account_id: Annotated[
        str | None, typer.Option("--id", help="12-digit account id (default: random).")
    ] = None,
    name: Annotated[str, typer.Option(help="A name for the account.")] = "account",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {AccountId, AccessKeyId, SecretAccessKey}.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account and its root credentials (the secret is shown once)."""
    settings = installation_settings(data_dir, database_url)
    account_id = account_id or generate_account_id()
    if not (len(account_id) == 12 and account_id.isdigit()):
        err.print("[red]the account id must be 12 digits[/red]")
        raise typer.Exit(2)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        barrier = load_barrier(settings, engine, create=False)
        with engine.connect() as conn:
            exists = conn.execute(
                select(schema.accounts.c.account_id).where(schema.accounts.c.account_id == account_id)
            ).first()
        if exists:
            err.print(f"[red]account {account_id} already exists[/red]")
            raise typer.Exit(1)
        account = create_account(engine, barrier, account_id=account_id, name=name)
    except SealError as exc:
        err.print(f"[red]cannot open the installation:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if as_json:
        print(
            json.dumps(
                {
                    "AccountId": account.account_id,
                    "AccessKeyId": account.access_key_id,
                    "SecretAccessKey": account.secret_access_key,
                }
            )
        )
        return
    out.print(f"Created account [bold]{account.account_id}[/bold] ({name}). Root credentials, shown once:")
    print(f"AWS_ACCESS_KEY_ID={account.access_key_id}")
    print(f"AWS_SECRET_ACCESS_KEY={account.secret_access_key}")


@app.command("list")
def list_accounts(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List accounts (never their secrets)."""
    settings = installation_settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(schema.accounts).order_by(schema.accounts.c.created_at)).all()
    finally:
        engine.dispose()
    accounts = [
        {
            "AccountId": r.account_id,
            "Name": r.name,
            "CreatedDate": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
        }
        for r in rows
    ]
    if as_json:
        print(json.dumps(accounts))
        return
    table = Table("AccountId", "Name", "Created")
    for account in accounts:
        table.add_row(account["AccountId"], account["Name"], account["CreatedDate"])
    out.print(table)


__all__ = ["app"]
