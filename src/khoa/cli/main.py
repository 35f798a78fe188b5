"""``khoa`` — run the server and administer an installation.

Every error is one line on standard error saying what is wrong and what to do (a traceback only with
``khoa --debug``). Exit codes: 0 success, 1 failure (including no installation where one is expected),
2 usage error (a bad option or value); ``khoa audit verify`` adds its own (see its help).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape

from khoa.cli.common import (
    USAGE,
    CliError,
    check_port,
    database_error,
    settings_for,
    stderr_console,
    usage_error,
)
from khoa.cli.env import AWS_CONTEXT
from khoa.cli.lazy import LazyCommand, LazyGroup, loaded_commands

if TYPE_CHECKING:
    from khoa.bootstrap import NewAccount
    from khoa.settings import Settings

# The commands besides `server`, imported only when run (khoa.cli.lazy): each `khoa` process runs one
# command, and importing them all cost more than half a second per start. Order is the help's order.
COMMANDS: dict[str, LazyCommand] = {
    "env": LazyCommand("khoa.cli.env:env"),
    "aws": LazyCommand(
        "khoa.cli.env:aws",
        {"context_settings": AWS_CONTEXT, "options_metavar": "[OPTIONS] AWS_COMMAND [ARGS]..."},
    ),
    "scan": LazyCommand("khoa.cli.scan:scan"),
    "review": LazyCommand("khoa.cli.review:review"),
    # The web console's link (issue 19); offered once khoa/cli/console_link.py exists.
    "console-link": LazyCommand("khoa.cli.console_link:console_link", optional=True),
    "account": LazyCommand("khoa.cli.account:app"),
    "access": LazyCommand("khoa.cli.access:app"),
    "audit": LazyCommand("khoa.cli.audit:app"),
    "functions": LazyCommand("khoa.cli.functions:app"),
    "webhooks": LazyCommand("khoa.cli.webhooks:app"),
    "alerts": LazyCommand("khoa.cli.alerts:app"),
    "secrets": LazyCommand("khoa.cli.secrets:app"),
    "operator": LazyCommand("khoa.cli.operator:app"),
    "xks-proxy": LazyCommand("khoa.cli.xks_proxy:app"),
}

HELP = (
    "Khoa: self-hosted AWS-compatible key and secrets management.\n\n"
    "Exit codes: 0 success, 1 failure (also: no installation where one is expected), 2 usage error "
    "(a bad option or value). Errors are one line; khoa --debug shows the traceback of an unexpected one."
)


class _Khoa(LazyGroup):
    """khoa's command group: the commands of COMMANDS, loaded when used, their help tidied."""

    registry = COMMANDS

    def loaded(self, command: Any) -> None:
        _tidy_help(command)


app = typer.Typer(cls=_Khoa, help=HELP, no_args_is_help=True, pretty_exceptions_show_locals=False)
err = stderr_console()
_debug = {"on": False}


@app.callback(help=HELP)
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", metavar="", help="Show the traceback of an unexpected error.")
    ] = False,
) -> None:
    _debug["on"] = debug


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(settings: Settings) -> NewAccount | None:
    """Migrate, load (or create) the root key and create the first account. Runs once per start;
    returns the first account when it was created now."""
    from sqlalchemy.exc import SQLAlchemyError

    from khoa.bootstrap import ensure_first_account, load_barrier, shamir_config
    from khoa.storage.database import create_database_engine, migrate

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
    except OSError as exc:
        raise CliError(
            f"cannot create the data directory {settings.data_dir}: {exc.strerror or exc} "
            "(give --data-dir a directory you may write)"
        ) from None
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        if settings.seal_backend == "shamir":
            shamir_config(engine)  # initialised (khoa operator init)? It starts sealed either way.
            return None
        barrier = load_barrier(settings, engine, create=True)
        account = ensure_first_account(settings, engine, barrier)
    except SQLAlchemyError as exc:
        raise database_error(exc, settings) from None
    finally:
        engine.dispose()
    if account is not None and not settings.dev:
        err.print(
            f"[bold]Created account {account.account_id}[/bold] with root credentials "
            f"(shown once; also in {escape(str(settings.data_dir / 'root-credentials'))}):"
        )
        print(f"AWS_ACCESS_KEY_ID={account.access_key_id}")
        print(f"AWS_SECRET_ACCESS_KEY={account.secret_access_key}")
        sys.stdout.flush()
    return account


def reach_khoa() -> tuple[str | None, str]:
    """How a person runs this ``khoa`` from another shell: ``(setup, command)``. ``khoa`` when it is on
    PATH, or after ``. .venv/bin/activate`` (the setup line, which also brings the aws CLI installed
    beside it); else the script's path; ``python -m khoa`` for a process started that way."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "khoa":
        return None, f"{shlex.quote(_shown_path(Path(sys.executable)))} -m khoa"
    on_path = shutil.which("khoa")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return None, "khoa"
    activate = script.parent / "activate"
    if activate.is_file():
        return f". {shlex.quote(_shown_path(activate))}", "khoa"
    return None, shlex.quote(_shown_path(script))


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _announce(settings: Settings, url: str, account: NewAccount | None, temporary: bool) -> None:
    """The first output of a server: where it listens, how to reach it, what to do next."""
    from khoa.cli.env import export_lines, root_credentials

    setup, khoa = reach_khoa()
    where = "" if settings.data_dir == Path(".khoa") else f" --data-dir {shlex.quote(str(settings.data_dir))}"
    if settings.dev:
        if account is not None:
            key_id, secret = account.access_key_id, account.secret_access_key
        else:
            try:
                key_id, secret = root_credentials(settings.data_dir)
            except CliError:  # dev mode accepts any credentials
                key_id, secret = "dev", "dev"
        region = settings.default_region
        variables = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }
        err.print(
            f"Khoa (dev) on {url}, data in {escape(str(settings.data_dir))}"
            + (" (temporary: removed at exit)" if temporary else "")
            + ". Paste this line into another shell, then use aws or boto3 as usual:"
        )
        print(export_lines(variables), flush=True)
        err.print(
            f"Web console: {escape(url)}/console/ (in --dev any access key signs in as the account root)"
        )
        return
    steps = [
        *([(setup, "puts khoa (and the aws CLI installed beside it) on PATH")] if setup else []),
        (f'eval "$({khoa} env{where})"', "sets AWS_ENDPOINT_URL, root credentials and region"),
        ("aws kms list-keys", f"boto3 and the aws CLI now reach Khoa (or: {khoa} aws{where} kms list-keys)"),
        (f"{khoa} --help", "accounts, audit trail, rotation functions, webhooks, alerts"),
    ]
    width = max(len(command) for command, _ in steps)
    err.print(f"Khoa on {escape(url)}, data in {escape(str(settings.data_dir))}. Next, in another shell:")
    for command, why in steps:
        err.print(escape(f"  {command.ljust(width)}  # {why}"))
    err.print(
        escape(
            f"Web console: {url}/console/ (sign in with an access key, or a link from `{khoa} console-link`)"
        )
    )


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT outside uvicorn's own handling (before it starts, and the signal it raises
    again after its graceful shutdown): unwind, so the temporary data directory is removed."""
    raise _Stopped(signum)


def _on_hangup_stop(signum: int, frame: object) -> None:
    """A closed terminal stops the server as SIGTERM does (gracefully, then the temporary data goes)."""
    os.kill(os.getpid(), signal.SIGTERM)


def check_tls(settings: Settings) -> None:
    """Refuse a half or unusable TLS configuration before anything starts (usage errors)."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return
    if not (cert and key):
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise usage_error(f"{given} needs {missing}: give both (or neither, for plain HTTP)")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        file = Path(path)
        if not file.is_file():
            why = "is not a file" if file.exists() else "does not exist"
            raise usage_error(f"{option} {path} {why}: give the path of a PEM file")
    import ssl  # here: only a TLS configuration needs it

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise usage_error(
            f"cannot use --tls-cert {cert} with --tls-key {key} ({reason}): give a PEM certificate and "
            "its matching private key"
        ) from None


@app.command()
def server(
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Address to bind \\[default: 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", callback=check_port, help="Port to listen on, 1-65535 \\[default: 9440]."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Directory for the database, root key and audit trail (created if missing) "
            "\\[default: .khoa].",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="SQLAlchemy URL: sqlite:///PATH or postgresql://… (psycopg 3) "
            "\\[default: sqlite in the data directory].",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Worker processes \\[default: 1].")
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            metavar="",
            help="Development mode: loopback only, no signature checks, every caller is the first "
            "account's root; without --data-dir (or KHOA_DATA_DIR) the data lives in a temporary "
            "directory removed at exit. Prints the export line for the aws CLI and boto3.",
        ),
    ] = False,
    tls_cert: Annotated[
        str | None, typer.Option(metavar="FILE", help="PEM certificate for HTTPS (with --tls-key).")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(metavar="FILE", help="PEM private key for HTTPS (with --tls-cert).")
    ] = None,
) -> None:
    """Start the Khoa server (creating the installation on first start)."""
    overrides: dict[str, Any] = {
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
    settings = settings_for(**overrides)
    if not settings.audit_enabled and not settings.dev:
        # The trail is fail-closed: no call is answered unless its record is durable. Turning it off is
        # for measuring its cost (bench/run.py), on a loopback-only dev server.
        raise usage_error("KHOA_AUDIT=0 is allowed only with --dev: unset it")
    if settings.dev and not _is_loopback(settings.host):
        raise usage_error("--dev binds to loopback only (it accepts any credentials): drop --host")
    check_tls(settings)
    if settings.seal_backend == "shamir" and settings.workers > 1:
        raise usage_error(
            "the shamir seal backend unseals one process: use --workers 1 (or run more servers)"
        )
    # Alembic announces its plugins at INFO as it is imported: import it (the server always migrates)
    # before logging is configured, so that a start's output stays the lines it announces.
    import alembic.command  # noqa: F401

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    temporary = settings.dev and data_dir is None and not os.environ.get("KHOA_DATA_DIR")
    if temporary:
        # Nothing left behind: the installation lives in a temporary directory removed at exit, and
        # the worker claims no CPU lock file outside it unless asked to.
        settings = replace(settings, data_dir=Path(tempfile.mkdtemp(prefix="khoa-dev-")))
        if not os.environ.get("KHOA_CPU_AFFINITY"):
            settings = replace(settings, cpu_affinity="off")
        signal.signal(signal.SIGTERM, _raise_stopped)
        signal.signal(signal.SIGINT, _raise_stopped)
        signal.signal(signal.SIGHUP, _on_hangup_stop)
    try:
        _serve(settings, temporary)
    except _Stopped as stopped:
        raise typer.Exit(128 + stopped.signum) from None
    finally:
        if temporary:
            shutil.rmtree(settings.data_dir, ignore_errors=True)


def _serve(settings: Settings, temporary: bool) -> None:
    import functools

    import uvicorn

    from khoa.cli.env import record_endpoint
    from khoa.crypto.seal import SealError
    from khoa.server.connections import HeadDeadlineProtocol

    try:
        account = prepare(settings)
        url = record_endpoint(settings)
    except SealError as exc:
        raise CliError(f"cannot start: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot write to the data directory {settings.data_dir}: {exc}") from None
    _announce(settings, url, account, temporary)
    os.environ.update(settings.to_env())
    uvicorn.run(
        "khoa.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # httptools, with a deadline for each request's head (slowloris: khoa.server.connections).
        http=cast(Any, functools.partial(HeadDeadlineProtocol, head_seconds=settings.body_timeout_seconds)),
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _raised_from(exc: BaseException, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing ``module``: commands are loaded lazily, and an
    exception class whose module was never imported cannot have been raised."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def _unexpected(exc: BaseException) -> CliError:
    """One line for an error no command turned into a CliError."""
    if _raised_from(exc, "sqlalchemy.exc", "SQLAlchemyError"):
        reason = getattr(exc, "orig", None) or exc
        lines = [line for line in str(reason).splitlines() if line.strip()]
        return CliError(f"database error: {lines[0] if lines else type(reason).__name__}")
    if _raised_from(exc, "khoa.crypto.seal", "SealError"):
        return CliError(f"cannot open the installation: {exc}")
    if isinstance(exc, OSError) and exc.filename:
        return CliError(f"{exc.filename}: {exc.strerror or type(exc).__name__}")
    return CliError(
        f"unexpected {type(exc).__name__}: {str(exc)[:200] or 'no message'} "
        "(run `khoa --debug …` for the traceback)"
    )


def _fail(error: CliError) -> int:
    err.print(f"[red]error:[/red] {escape(_one_line(error.message))}")
    return error.exit_code


def _tidy_help(command: Any) -> None:
    """No type labels in the help: none after a flag (``--dev <bool>``, ``--help <bool>``), which takes
    no value, and none after an argument (``NAME <str>``), whose name already says what it is."""
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.param_type_name == "argument":
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010 - this instance only
        elif param.metavar is None and getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.metavar is None and param.name:
            param.metavar = param.name.upper()  # an option declared without one: --out OUT, not <path>
    for sub in loaded_commands(command).values():  # a lazy group's others: as they load (_Khoa.loaded)
        _tidy_help(sub)


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (errors printed as one line)."""
    _debug["on"] = False
    command = typer.main.get_command(app)
    _tidy_help(command)
    try:
        result = command.main(args=args, prog_name="khoa", standalone_mode=False)
    except typer.TyperException as exc:  # click's errors (usage: bad option, value, command)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            return USAGE
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and isinstance(getattr(exc, "exit_code", None), int) and exc.exit_code == USAGE:
            message += f" (see `{ctx.command_path} --help`)"
        return _fail(CliError(message, getattr(exc, "exit_code", USAGE)))
    except typer.Abort:
        return _fail(CliError("aborted"))
    except CliError as exc:
        if _debug["on"]:
            raise
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _debug["on"]:
            raise
        return _fail(_unexpected(exc))
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
