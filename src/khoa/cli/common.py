"""What every operator command shares: finding the installation (data dir or database URL), refusing
what cannot work in one line, and printing lists.

Every error a command reports is a :class:`CliError`: one line saying what is wrong and what to do,
printed by :func:`khoa.cli.main.main` (a traceback only with ``khoa --debug``). Exit codes: 1 for a
failure (a database that does not answer, no installation where one is expected), 2 for a usage error
(a bad option, argument or value).

Commands other than ``khoa server`` never create an installation: :func:`installation` opens an
existing one or refuses, so a wrong ``--data-dir`` is reported, not silently initialised.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

    from khoa.crypto.barrier import Barrier
    from khoa.settings import Settings

# SQLAlchemy, the settings (which bring the storage layer and Alembic) and rich's tables are imported
# by the functions that use them: every `khoa` command imports this module, and a command that never
# opens a database (scan, secrets, xks-proxy, --help) should not pay for them at each start.

USAGE = 2  # exit code of a usage error (as click's)
ACCOUNT_ID = re.compile(r"^\d{12}$")

_Item = TypeVar("_Item")


class CliError(Exception):
    """A failure a person can act on: ``message`` is one line saying what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the parts held
        self.exit_code = exit_code


class NoInstallation(CliError):
    """The data directory or database holds no Khoa installation."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1)


def usage_error(message: str) -> CliError:
    return CliError(message, USAGE)


# -- options shared by the commands ----------------------------------------------------------------


def check_account_id(value: str | None) -> str | None:
    """An ``--account`` option's callback: 12 digits (or no value), else a usage error."""
    if value is not None and not ACCOUNT_ID.match(value):
        raise typer.BadParameter(f"{value!r} is not an account id: an account id is 12 digits")
    return value


def check_port(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise typer.BadParameter(f"{value} is not a port: use 1-65535")
    return value


DataDir = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Data directory of the installation (default .khoa, or KHOA_DATA_DIR)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        metavar="URL", help="Database URL, instead of the data directory's SQLite (or KHOA_DATABASE_URL)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")]


def format_option(formats: type[StrEnum]) -> Any:
    """The ``--format`` option of a command printing a report (``khoa scan``, ``khoa review``): its
    metavar lists ``formats``' values, so the enum alone says what the command offers. Use as
    ``Annotated[Formats, format_option(Formats)] = Formats.text``."""
    return typer.Option(
        "--format", metavar="|".join(member.value for member in formats), help="Output format."
    )


def khoa_version() -> str:
    """Khoa's installed version (a SARIF report names its tool's version); "0" from a bare source tree."""
    from importlib import metadata

    try:
        return metadata.version("khoa")
    except metadata.PackageNotFoundError:
        return "0"


AccountOption = Annotated[
    str,
    typer.Option("--account", metavar="ID", callback=check_account_id, help="Account id (12 digits)."),
]


# -- the database URL ------------------------------------------------------------------------------

# What Khoa's database engines speak, and the drivers it ships with.
_DRIVERS = {
    "sqlite": "sqlite",  # the standard library's sqlite3
    "postgresql": "postgresql+psycopg",
}
_ALIASES = {"postgres": "postgresql"}
_SHIPPED = {"sqlite": "pysqlite", "postgresql": "psycopg"}
_EXAMPLES = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
# Databases Khoa rotates credentials of, but does not keep its own data in: its schema's migrations
# assume PostgreSQL's or SQLite's index limits and case-sensitive text comparison.
_NOT_A_STORE = ("mysql", "mariadb")


def shown_url(url: str | URL) -> str:
    """The URL with its password hidden (for messages)."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url) if isinstance(url, str) else url
        return parsed.render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a URL>"


def database_url(raw: str) -> str:
    """``raw`` with the driver Khoa ships chosen (``postgres://`` and ``postgresql://`` → psycopg 3);
    CliError (usage) for a URL that cannot work."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise usage_error(f"--database-url {raw!r} is not a database URL: give {_EXAMPLES}") from None
    backend, _, driver = url.drivername.partition("+")
    backend = _ALIASES.get(backend, backend)
    if backend in _NOT_A_STORE:
        raise usage_error(
            f"--database-url: Khoa keeps its data in SQLite or PostgreSQL, not {backend!r} (MySQL and "
            f"MariaDB are databases whose credentials Khoa rotates): give {_EXAMPLES}"
        )
    if backend not in _DRIVERS:
        raise usage_error(f"--database-url: Khoa does not support {backend!r} databases: give {_EXAMPLES}")
    if driver and driver != _SHIPPED[backend]:
        raise usage_error(
            f"--database-url: the {driver!r} driver is not the one Khoa uses for {backend}: "
            f"write {_DRIVERS[backend]}://… (or {backend}://…)"
        )
    url = url.set(drivername=_DRIVERS[backend])
    if backend != "sqlite":
        try:
            port = url.port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise usage_error(f"--database-url: the port of {shown_url(url)} is not 1-65535")
        if not url.database:
            raise usage_error(f"--database-url {shown_url(url)} names no database: add /DBNAME")
    return url.render_as_string(hide_password=False)


def check_http_url(url: str, what: str) -> str:
    """An http(s) URL with a host and a valid port, or a usage error naming ``what``."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise usage_error(f"{what} {url!r} has a port outside 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage_error(f"{what} must be an http(s) URL with a host, e.g. https://hooks.internal/khoa")
    return url


def settings_for(**overrides: Any) -> Settings:
    """Settings from the environment and flags, checked; a one-line usage error for what cannot work."""
    from khoa.settings import Settings

    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    if settings.database_url:
        settings = replace(settings, database_url=database_url(settings.database_url))
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        raise usage_error(f"--data-dir {settings.data_dir} is a file, not a directory: give a directory")
    return settings


def installation_settings(data_dir: Path | None, database_url: str | None) -> Settings:
    """Settings for a command run beside (or instead of) the server on the same data."""
    return settings_for(data_dir=data_dir, database_url=database_url)


# -- opening an installation -----------------------------------------------------------------------


def database_error(exc: BaseException, settings: Settings) -> CliError:
    """One line for a database that cannot be used (down, refused, missing, wrong credentials)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = lines[0] if lines else type(orig).__name__
    where = shown_url(settings.effective_database_url)
    return CliError(
        f"cannot use the database {where}: {reason} (check --database-url and that the database is running)"
    )


def _no_installation(settings: Settings) -> NoInstallation:
    if settings.database_url:
        return NoInstallation(
            f"the database {shown_url(settings.database_url)} holds no Khoa installation: start "
            "`khoa server --database-url …` once to create one, or check --database-url"
        )
    directory = settings.data_dir
    why = "it has no khoa.db" if directory.exists() else "the directory does not exist"
    return NoInstallation(
        f"no Khoa installation in {directory} ({why}): check --data-dir (default .khoa, or KHOA_DATA_DIR), "
        f"or start `khoa server --data-dir {directory}` once to create one"
    )


def require_installation(settings: Settings) -> None:
    """Refuse (before connecting) a data directory that holds no installation."""
    if not settings.database_url and not (settings.data_dir / "khoa.db").is_file():
        raise _no_installation(settings)


@contextmanager
def installation(settings: Settings, *, write: bool = False) -> Iterator[Engine]:
    """An engine on the installation ``settings`` name; never creates one (CliError when there is
    none). ``write``: bring its schema to this version first. Database failures inside the block
    become one-line CliErrors."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from khoa.storage import schema
    from khoa.storage.database import create_database_engine, migrate

    require_installation(settings)
    engine = create_database_engine(settings.effective_database_url)
    try:
        try:
            exists = inspect(engine).has_table(schema.accounts.name)
        except SQLAlchemyError as exc:
            raise database_error(exc, settings) from None
        if not exists:
            raise _no_installation(settings)
        try:
            if write:
                migrate(engine)
            yield engine
        except SQLAlchemyError as exc:
            raise database_error(exc, settings) from None
    finally:
        engine.dispose()


def open_barrier(settings: Settings, engine: Engine) -> Barrier:
    """The installation's barrier (its root key, from the seal) for a command that seals or opens
    values; a one-line CliError when the seal cannot give the key."""
    from khoa.bootstrap import load_barrier
    from khoa.crypto.seal import SealError

    try:
        return load_barrier(settings, engine, create=False)
    except SealError as exc:
        raise CliError(f"cannot open the installation: {exc}") from None


def require_account(engine: Engine, account_id: str) -> None:
    """Refuse an account that does not exist in this installation (usage error)."""
    from sqlalchemy import select

    from khoa.storage import schema

    with engine.connect() as conn:
        found = conn.execute(
            select(schema.accounts.c.account_id).where(schema.accounts.c.account_id == account_id)
        ).first()
    if found is None:
        raise usage_error(
            f"account {account_id} does not exist in this installation: see `khoa account list`"
        )


# -- output ------------------------------------------------------------------------------------------


def stdout_console() -> Console:
    """Standard output: the terminal's width on a terminal; never cut (no 80-column limit) when piped.
    Values print verbatim: no emoji codes (``:secret:`` in an ARN) and no highlighting."""
    if sys.stdout.isatty():
        return Console(highlight=False, emoji=False)
    return Console(highlight=False, emoji=False, width=100_000, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def print_list(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool, empty: str) -> None:
    """A list command's output: a JSON array with ``--json``, else a table of ``columns``."""
    from rich.table import Table

    if as_json:
        print(json.dumps(list(rows), indent=2))
        return
    console = stdout_console()
    if not rows:
        console.print(empty)
        return
    table = Table(*columns)
    for column in table.columns:
        column.overflow = "fold"  # never "…": an ARN cut short is useless
    for row in rows:
        table.add_row(
            *(escape(str(row.get(column) if row.get(column) is not None else "-")) for column in columns)
        )
    console.print(table)


# -- list and delete commands ------------------------------------------------------------------------


def list_command(
    data_dir: Path | None,
    database_url: str | None,
    fetch: Callable[[Engine], Iterable[_Item]],
    row: Callable[[_Item], dict[str, Any]],
    *,
    columns: Sequence[str],
    as_json: bool,
    empty: str,
) -> None:
    """What a ``list`` command of registrations does (``khoa functions list``, ``khoa webhooks list``):
    read them from the installation (read only), one row each, printed by :func:`print_list`. The
    command says only what it reads (``fetch``) and how an item reads as a row (``row``)."""
    settings = installation_settings(data_dir, database_url)
    with installation(settings) as engine:
        items = list(fetch(engine))
    print_list([row(item) for item in items], columns, as_json, empty)


def delete_command(
    data_dir: Path | None,
    database_url: str | None,
    remove: Callable[[Engine], bool],
    *,
    deleted: str,
    missing: str,
) -> None:
    """What a ``delete`` command of a registration does once its argument is checked: remove it
    (``remove`` says whether there was one), then print ``deleted``, or fail with ``missing`` (exit 1)."""
    settings = installation_settings(data_dir, database_url)
    with installation(settings, write=True) as engine:
        removed = remove(engine)
    if not removed:
        raise CliError(missing)
    stdout_console().print(deleted, markup=False)
