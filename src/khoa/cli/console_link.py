"""``khoa console-link`` — a single-use, short-lived web console sign-in link for a role.

For operators who hand a person console access without handing them keys: whoever opens the link
(and confirms) is signed in as a fresh session of the role, with the role's permissions only, for at
most the console's session lifetime (and the role's maximum session duration). The link works once;
only its digest is stored, so the database holds nothing that signs anyone in.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated

import typer

from khoa.cli.common import (
    CliError,
    DatabaseUrl,
    DataDir,
    check_http_url,
    installation,
    installation_settings,
    open_barrier,
    require_account,
    usage_error,
)
from khoa.services.sts.store import StsStore
from khoa.webconsole.sessions import ConsoleSessions

_ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/[\x21-\x7e]+$")


def console_link(
    role_arn: Annotated[
        str, typer.Option("--role-arn", metavar="ARN", help="The role the link signs in as (its ARN).")
    ],
    minutes: Annotated[
        int, typer.Option(min=1, max=60, metavar="N", help="How long the link can be used (1-60).")
    ] = 5,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="The server's address as browsers reach it (default: host and port)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print {Url, Expires, RoleArn}.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Mint a single-use web console sign-in link for a role (printed once)."""
    match = _ROLE_ARN.match(role_arn)
    if match is None:
        raise usage_error(f"--role-arn {role_arn!r} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    account_id = match.group(1)
    settings = installation_settings(data_dir, database_url)
    if url is None:
        scheme = "https" if settings.tls_cert else "http"
        url = f"{scheme}://{settings.host}:{settings.port}"
    base = check_http_url(url, "--url").rstrip("/")
    now = time.time()
    with installation(settings, write=True) as engine:
        require_account(engine, account_id)
        barrier = open_barrier(settings, engine)
        if StsStore(engine, barrier).role(account_id, role_arn) is None:
            raise CliError(f"no role {role_arn} in account {account_id}")
        token = ConsoleSessions(engine, barrier).mint_link(
            account_id=account_id, role_arn=role_arn, now=now, lifetime_seconds=minutes * 60
        )
    link = f"{base}/console/link/{token}"
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + minutes * 60))
    if as_json:
        print(json.dumps({"Url": link, "Expires": expires, "RoleArn": role_arn}))
        return
    print(link)
    typer.echo(f"single use, valid until {expires}; signs in as a session of {role_arn}", err=True)
