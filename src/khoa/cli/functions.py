"""``khoa functions`` — register the rotation functions secrets name as RotationLambdaARN."""

from __future__ import annotations

import re
import time
from typing import Annotated

import typer

from khoa.bootstrap import load_barrier
from khoa.cli.common import (
    ACCOUNT_ID,
    AccountOption,
    AsJson,
    CliError,
    DatabaseUrl,
    DataDir,
    check_http_url,
    delete_command,
    installation,
    installation_settings,
    list_command,
    require_account,
    stdout_console,
    usage_error,
)
from khoa.crypto.seal import SealError
from khoa.secret_rotation import functions
from khoa.settings import DEFAULT_REGION

app = typer.Typer(help="Rotation functions (what RotationLambdaARN names).", no_args_is_help=True)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what a Lambda function name in an ARN may hold
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")

RegionOption = Annotated[str, typer.Option(metavar="REGION", help="Region the function belongs to.")]


def _check_name_and_region(name: str, region: str) -> None:
    if not _NAME.match(name):
        raise usage_error(
            f"{name!r} is not a function name: use 1-64 letters, digits, '-' or '_' "
            "(the NAME in arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
        )
    if not _REGION.match(region):
        raise usage_error(f"--region {region!r} is not a region name, e.g. us-east-1")


@app.command("register")
def register(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="Function name: the NAME in arn:aws:lambda:R:A:function:NAME."),
    ],
    account: AccountOption,
    region: RegionOption = DEFAULT_REGION,
    builtin: Annotated[
        str | None,
        typer.Option(metavar="ROTATOR", help=f"Built-in rotator: {', '.join(functions.BUILTINS)}."),
    ] = None,
    python: Annotated[
        str | None, typer.Option(metavar="MODULE:FUNCTION", help="A Python callable, called (event, client).")
    ] = None,
    http: Annotated[
        str | None, typer.Option(metavar="URL", help="An http(s) URL receiving each step as a JSON POST.")
    ] = None,
    hmac_secret: Annotated[
        str | None, typer.Option(metavar="KEY", help="Key for the X-Khoa-Signature header (http).")
    ] = None,
    role: Annotated[
        str | None, typer.Option(metavar="ROLE_ARN", help="IAM role ARN the function acts as.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.1, help="Seconds an http function may take per step.")
    ] = 30.0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register (or replace) a rotation function."""
    chosen = [
        (kind, target)
        for kind, target in (("builtin", builtin), ("python", python), ("http", http))
        if target
    ]
    if len(chosen) != 1:
        raise usage_error("give exactly one of --builtin, --python or --http")
    kind, target = chosen[0]
    _check_name_and_region(name, region)
    if kind == "http":
        check_http_url(target, "--http")
    if role is not None and not re.match(r"^arn:aws:iam::\d{12}:role/.+$", role):
        raise usage_error(f"--role {role!r} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    settings = installation_settings(data_dir, database_url)
    with installation(settings, write=True) as engine:
        require_account(engine, account)
        try:
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
        except functions.FunctionError as exc:
            raise usage_error(f"cannot register: {exc}") from None
        except SealError as exc:
            raise CliError(f"cannot open the installation: {exc}") from None
    stdout_console().print(
        f"Registered arn:aws:lambda:{region}:{account}:function:{name} ({kind} {target})", markup=False
    )


@app.command("list")
def list_functions(
    as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """List registered rotation functions."""
    list_command(
        data_dir,
        database_url,
        functions.list_functions,
        lambda function: {
            "FunctionArn": function.arn,
            "Kind": function.kind,
            "Target": function.target,
            "Role": function.role_arn,
            "TimeoutSeconds": function.timeout_seconds,
        },
        columns=("FunctionArn", "Kind", "Target", "Role"),
        as_json=as_json,
        empty="No rotation functions.",
    )


@app.command("delete")
def delete(
    name: Annotated[
        str, typer.Argument(metavar="NAME|ARN", help="Function name (with --account) or its Lambda ARN.")
    ],
    account: Annotated[
        str | None, typer.Option(metavar="ID", help="Account id (12 digits); not needed with an ARN.")
    ] = None,
    region: RegionOption = DEFAULT_REGION,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a rotation function (secrets naming it fail to rotate until it is registered again)."""
    if name.startswith("arn:"):
        parsed = functions.parse_arn(name)
        if parsed is None:
            raise usage_error(
                f"{name!r} is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
            )
        region, account, name = parsed
    elif account is None:
        raise usage_error("give --account ID with a function name (or give the function's ARN)")
    elif not ACCOUNT_ID.match(account):
        raise usage_error(f"--account {account!r} is not an account id: an account id is 12 digits")
    _check_name_and_region(name, region)
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    delete_command(
        data_dir,
        database_url,
        lambda engine: functions.delete_function(engine, account_id=account, region=region, name=name),
        deleted=f"Deleted {arn}",
        missing=f"no rotation function {arn} is registered: see `khoa functions list`",
    )
