"""``khoa webhooks`` — send secret change events to an HTTP endpoint."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from khoa.changes import webhooks
from khoa.cli.common import (
    AccountOption,
    AsJson,
    DatabaseUrl,
    DataDir,
    check_http_url,
    delete_command,
    installation,
    installation_settings,
    list_command,
    open_barrier,
    require_account,
    stdout_console,
    usage_error,
)

app = typer.Typer(help="Webhooks receiving secret change events.", no_args_is_help=True)


@app.command("register")
def register(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="http(s) URL receiving each event as a JSON POST.")
    ],
    account: AccountOption,
    secret_prefix: Annotated[
        str, typer.Option(metavar="ARN_PREFIX", help="Only secrets whose ARN starts with this ('*' = all).")
    ] = "*",  # noqa: S107 - an ARN prefix, not a password
    signing_secret: Annotated[
        str | None, typer.Option(metavar="KEY", help="Key for the X-Khoa-Signature HMAC header.")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a webhook; it receives events published from now on."""
    check_http_url(url, "the URL")
    settings = installation_settings(data_dir, database_url)
    with installation(settings, write=True) as engine:
        require_account(engine, account)
        barrier = open_barrier(settings, engine)
        webhook_id = webhooks.register(
            engine,
            barrier,
            account_id=account,
            url=url,
            secret=signing_secret,
            secret_prefix=secret_prefix,
            now=time.time(),
        )
    stdout_console().print(f"Registered webhook {webhook_id} → {url}", markup=False)


@app.command("list")
def list_webhooks(
    as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """List registered webhooks (never their signing keys)."""
    list_command(
        data_dir,
        database_url,
        webhooks.list_webhooks,
        lambda row: {
            "WebhookId": row.webhook_id,
            "AccountId": row.account_id,
            "Url": row.url,
            "SecretPrefix": row.secret_prefix,
            "Signed": row.secret_sealed is not None,
            "DeliveredSeq": row.delivered_seq,
            "CreatedDate": datetime.fromtimestamp(row.created_at, UTC).isoformat(),
        },
        columns=("WebhookId", "AccountId", "Url", "SecretPrefix", "Signed"),
        as_json=as_json,
        empty="No webhooks.",
    )


@app.command("delete")
def delete(
    webhook_id: Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="The id `register` printed.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a webhook: it receives no more events."""
    try:
        uuid.UUID(webhook_id)
    except ValueError:
        raise usage_error(f"{webhook_id!r} is not a webhook id: see `khoa webhooks list`") from None
    delete_command(
        data_dir,
        database_url,
        lambda engine: webhooks.delete_webhook(engine, webhook_id),
        deleted=f"Deleted webhook {webhook_id}",
        missing=f"no webhook {webhook_id}: see `khoa webhooks list`",
    )
