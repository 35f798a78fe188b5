"""``khoa account`` — create and list accounts directly in the database (works while a server runs)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy import select

from khoa.bootstrap import create_account, generate_account_id
from khoa.cli.common import (
    ACCOUNT_ID,
    AsJson,
    CliError,
    DatabaseUrl,
    DataDir,
    installation,
    installation_settings,
    open_barrier,
    print_list,
    stdout_console,
    usage_error,
)
from khoa.storage import schema

app = typer.Typer(help="Manage accounts.", no_args_is_help=True)


@app.command("create")
def create(
    account_id: Annotated[
        str | None, typer.Option("--id", metavar="ID", help="12-digit account id (default: random).")
    ] = None,
    name: Annotated[str, typer.Option(metavar="NAME", help="A name for the account.")] = "account",
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print {AccountId, AccessKeyId, SecretAccessKey}.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account and its root credentials (the secret is shown once); it joins the
    organization managed by the installation's first account, if that account has made one."""
    if account_id is not None and not ACCOUNT_ID.match(account_id):
        raise usage_error(f"--id {account_id!r} is not an account id: an account id is 12 digits")
    settings = installation_settings(data_dir, database_url)
    account_id = account_id or generate_account_id()
    with installation(settings, write=True) as engine:
        barrier = open_barrier(settings, engine)
        with engine.connect() as conn:
            exists = conn.execute(
                select(schema.accounts.c.account_id).where(schema.accounts.c.account_id == account_id)
            ).first()
        if exists:
            raise CliError(f"account {account_id} already exists: choose another --id")
        account = create_account(engine, barrier, account_id=account_id, name=name)
        # As AWS's CreateAccount called by the management account does: a new account joins the
        # organization of the installation's first account (the operator's), when it has one; never an
        # organization a tenant made. (Imported here: the organizations service loads the service
        # models, which `account list` does not need.)
        from khoa.services.organizations.store import join_installation_organization

        join_installation_organization(engine, account.account_id, time.time())
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
    stdout_console().print(
        f"Created account [bold]{account.account_id}[/bold] ({escape(name)}). Root credentials, shown once:",
        markup=True,
    )
    print(f"AWS_ACCESS_KEY_ID={account.access_key_id}")
    print(f"AWS_SECRET_ACCESS_KEY={account.secret_access_key}")


@app.command("list")
def list_accounts(
    as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """List accounts (never their secrets)."""
    settings = installation_settings(data_dir, database_url)
    with installation(settings) as engine, engine.connect() as conn:
        rows = conn.execute(select(schema.accounts).order_by(schema.accounts.c.created_at)).all()
    accounts = [
        {
            "AccountId": r.account_id,
            "Name": r.name,
            "CreatedDate": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
        }
        for r in rows
    ]
    print_list(accounts, ("AccountId", "Name", "CreatedDate"), as_json, "No accounts.")


__all__ = ["app"]
