"""``khoa operator`` — seals an operator controls: init, unseal, seal, rekey, migrate-seal.

Shares are printed once, one per line, by ``init`` and ``rekey`` and stored nowhere. They are read
one per prompt on a terminal (not echoed) or one per line of standard input, never from the command
line (where the process list and shell history would keep them).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy import Engine

from khoa.bootstrap import (
    WRAPPED_BACKENDS,
    current_root_key,
    init_shamir,
    migrate_seal,
    rekey_shamir,
    seal_type,
    shamir_config,
)
from khoa.cli.common import (
    CliError,
    DatabaseUrl,
    DataDir,
    database_error,
    installation,
    installation_settings,
    stderr_console,
    usage_error,
)
from khoa.cli.env import endpoint_url, root_credentials
from khoa.crypto.seal import SealError
from khoa.crypto.shamir import MAX_SHARES, ShamirError
from khoa.settings import Settings
from khoa.storage.database import create_database_engine, migrate

app = typer.Typer(
    help="Seal and unseal the root key (shamir, pkcs11, awskms seal backends).", no_args_is_help=True
)
err = stderr_console()

KeyShares = Annotated[
    int, typer.Option("--key-shares", metavar="N", min=2, max=MAX_SHARES, help="Shares to make.")
]
KeyThreshold = Annotated[
    int, typer.Option("--key-threshold", metavar="T", min=2, max=MAX_SHARES, help="Shares needed to unseal.")
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url", metavar="URL", help="The server (default: this machine's, from the settings)."
    ),
]


def _check_split(shares: int, threshold: int) -> None:
    if threshold > shares:
        raise usage_error(f"--key-threshold {threshold} is more than --key-shares {shares}")


def _print_shares(shares: list[bytes]) -> None:
    for share in shares:
        print(base64.b64encode(share).decode())
    sys.stdout.flush()


def _share_source(count: int | None) -> Any:
    """Yield shares: from getpass prompts on a terminal (``count`` of them), else lines of stdin."""
    if sys.stdin.isatty():
        index = 0
        while count is None or index < count:
            index += 1
            line = getpass.getpass(f"Share {index}{f'/{count}' if count else ''}: ").strip()
            if not line:
                return
            yield line
        return
    for raw in sys.stdin:
        line = raw.strip()
        if line:
            yield line


def _decode(line: str) -> bytes:
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("a share is not base64: give the lines khoa operator init printed") from None


@app.command("init")
def init(
    key_shares: KeyShares,
    key_threshold: KeyThreshold,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create the root key of a new installation (shamir seal backend) and print its shares once."""
    _check_split(key_shares, key_threshold)
    settings = installation_settings(data_dir, database_url)
    if settings.seal_backend != "shamir":
        raise usage_error("khoa operator init is for the shamir seal backend: set KHOA_SEAL_BACKEND=shamir")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
    except OSError as exc:
        raise CliError(
            f"cannot create the data directory {settings.data_dir}: {exc.strerror or exc}"
        ) from None
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        shares, account = init_shamir(settings, engine, key_shares, key_threshold)
    except SealError as exc:
        raise CliError(f"cannot initialise: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            raise database_error(exc, settings) from None
        raise
    finally:
        engine.dispose()
    err.print(
        f"[bold]Initialised[/bold]: {key_shares} shares, any {key_threshold} unseal. They are printed "
        "once, below, and stored nowhere: give each to a different person."
    )
    if account is not None:
        err.print(
            f"Created account {account.account_id}; its root credentials are in "
            f"{escape(str(settings.data_dir / 'root-credentials'))}."
        )
    _print_shares(shares)


def _request(
    url: str, data: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    body = json.dumps(data).encode() if data is not None else None
    if not url.startswith(("http://", "https://")):
        raise usage_error(f"--endpoint-url {url}: give an http:// or https:// URL")
    request = urllib.request.Request(  # noqa: S310 - http(s), checked above
        url, data=body, method="POST" if body is not None else "GET"
    )
    request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http(s), checked
            parsed: dict[str, Any] = json.loads(response.read() or b"{}")
            return parsed
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"{}")
        except ValueError:
            answer = {}
        if exc.code == 404:
            raise CliError(f"{url}: not found (is this a server with KHOA_SEAL_BACKEND=shamir?)") from None
        reason = answer.get("message") or answer.get("error") or exc.reason
        raise CliError(f"{url}: {exc.code} {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CliError(f"cannot reach the server at {url}: {reason}") from None


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or endpoint_url(installation_settings(None, None))).rstrip("/")


@app.command("unseal")
def unseal(endpoint_url_option: EndpointUrl = None) -> None:
    """Send shares to a sealed server, one per prompt (terminal) or per line of standard input."""
    base = _endpoint(endpoint_url_option)
    status = _request(f"{base}/_khoa/seal-status")
    if not status.get("sealed"):
        err.print("The server is unsealed.")
        return
    threshold = int(status.get("t", 0)) or None
    needed = threshold - int(status.get("progress", 0)) if threshold else None
    for line in _share_source(needed):
        try:
            status = _request(f"{base}/_khoa/unseal", {"key": base64.b64encode(_decode(line)).decode()})
        except CliError as exc:
            raise CliError(f"unseal refused: {exc.message}") from None
        if not status.get("sealed"):
            err.print("[bold]Unsealed.[/bold]")
            return
        err.print(f"Sealed: {status.get('progress', 0)} of {status.get('t')} shares given.")
    err.print(f"Still sealed: {status.get('progress', 0)} of {status.get('t')} shares given so far.")


@app.command("seal")
def seal(
    endpoint_url_option: EndpointUrl = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Use the root credentials in DIR/root-credentials (default: AWS chain)."
        ),
    ] = None,
) -> None:
    """Seal a running server (signed with an account root's credentials): it forgets the root key."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    base = _endpoint(endpoint_url_option)
    settings = installation_settings(data_dir, None)
    if data_dir is not None:
        key_id, secret = root_credentials(data_dir)
        credentials = Credentials(key_id, secret)
    else:
        found = botocore.session.get_session().get_credentials()
        if found is None:
            raise CliError("no AWS credentials found: give --data-dir or set the root's AWS credentials")
        credentials = found.get_frozen_credentials()
    url = f"{base}/_khoa/seal"
    request = AWSRequest(method="POST", url=url, data=b"{}", headers={"content-type": "application/json"})
    SigV4Auth(credentials, "khoa", settings.default_region).add_auth(request)
    _request(url, {}, {k: v for k, v in request.headers.items() if k.lower() != "content-type"})
    err.print("[bold]Sealed.[/bold]")


def _sealed_by(settings: Settings, engine: Engine) -> str:
    stored = seal_type(engine)
    if stored is not None:
        return stored
    if settings.seal_backend in ("file", "passphrase"):
        return settings.seal_backend
    return "file" if (settings.data_dir / "root.key").exists() else "passphrase"


def _read_shares(count: int) -> list[bytes]:
    shares = [_decode(line) for line in _share_source(count)]
    if len(shares) < count:
        raise CliError(f"{len(shares)} shares given, {count} needed")
    return shares[:count]


@app.command("rekey")
def rekey(
    key_shares: KeyShares,
    key_threshold: KeyThreshold,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """New shares (of a new unseal key) for the same root key: read a threshold of the current shares,
    store the root key wrapped under the new unseal key, then print its shares. Nothing re-encrypted."""
    _check_split(key_shares, key_threshold)
    settings = installation_settings(data_dir, database_url)
    with installation(settings, write=True) as engine:
        try:
            config = shamir_config(engine)
            old = _read_shares(config.threshold)
            rekeyed = rekey_shamir(engine, old, key_shares, key_threshold)
        except (SealError, ShamirError) as exc:
            raise CliError(f"cannot rekey: {exc}") from None
    done = f"[bold]Rekeyed[/bold]: {key_shares} new shares, any {key_threshold} unseal."
    if not rekeyed.converted:
        err.print(
            f"{done} The old shares no longer open anything this database holds: every server refuses "
            "them from now on (servers unsealed now stay unsealed). The root key is unchanged, so a "
            "backup of the database taken before this rekey still opens with a threshold of the old "
            "shares."
        )
    else:
        err.print(
            f"{done} Every server refuses the old shares from now on (servers unsealed now stay unsealed)."
        )
        err.print(
            "[bold]Warning[/bold]: the old shares were of the root key itself (this installation was "
            "initialised before Khoa wrapped the root key under an unseal key). A threshold of them still "
            "reconstructs the root key, which opens this database and every backup of it, now and after "
            "any rekey: if they may be compromised, move the data to a new installation."
        )
    err.print("The new shares, printed once:")
    _print_shares(rekeyed.shares)


@app.command("migrate-seal")
def migrate_seal_command(
    to: Annotated[str, typer.Option("--to", metavar="BACKEND", help="shamir, pkcs11, awskms or file.")],
    key_shares: Annotated[int, typer.Option("--key-shares", metavar="N", help="With --to shamir.")] = 0,
    key_threshold: Annotated[int, typer.Option("--key-threshold", metavar="T", help="With --to shamir.")] = 0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-seal the root key for another backend (the database says which seals it now; file or
    passphrase: KHOA_SEAL_BACKEND, else whether DIR/root.key exists). Both backends' settings come from
    the environment (KHOA_SEAL_AWSKMS_*, KHOA_SEAL_PKCS11_*, KHOA_PASSPHRASE). The data is not
    re-encrypted; restart the servers with KHOA_SEAL_BACKEND set to the new backend."""
    to = to.strip().lower()
    if to not in ("shamir", "file", *WRAPPED_BACKENDS):
        raise usage_error(f"--to {to!r}: choose shamir, pkcs11, awskms or file")
    if to == "shamir" and not (2 <= key_threshold <= key_shares <= MAX_SHARES):
        raise usage_error("--to shamir needs --key-shares N and --key-threshold T with 2 <= T <= N <= 255")
    settings: Settings = installation_settings(data_dir, database_url)
    with installation(settings, write=True) as engine:
        try:
            source = _sealed_by(settings, engine)
            if source == to:
                raise usage_error(f"the installation is already sealed by {to}")
            from_settings = replace(settings, seal_backend=source)
            old_shares = _read_shares(shamir_config(engine).threshold) if source == "shamir" else None
            key = current_root_key(from_settings, engine, old_shares)
            shares = migrate_seal(settings, engine, key, to, shares=key_shares, threshold=key_threshold)
            now = seal_type(engine) or "file"
        except (SealError, ShamirError) as exc:
            raise CliError(f"cannot migrate the seal: {exc}") from None
    err.print(
        f"[bold]Migrated[/bold] the root key from {source} to {now}; start the servers with "
        f"KHOA_SEAL_BACKEND={to}."
    )
    if shares:
        err.print("The new shares, printed once:")
        _print_shares(shares)
