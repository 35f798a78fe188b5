"""The ``khoa`` command line as an operator meets it: every error is one line saying what is wrong and
what to do, usage errors exit 2, nothing prints a traceback unless ``khoa --debug``; commands other than
``khoa server`` never create an installation; list commands print JSON and full-width tables.

Each case runs the real entry point (``python -m khoa``) in a subprocess, without KHOA_* variables.
Starting that interpreter is nearly all a case costs, so commands that do not depend on each other
run at the same time: a parametrised test's cases all at once in a module fixture (each case then
checks its own answer), and a test's independent commands together (``khoa_all``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ACCOUNT_ID, KhoaServer, free_port

USAGE = 2
FAILURE = 1
NO_TRAIL = 3
REFUSED_PG = "postgresql://khoa@127.0.0.1:1/khoa"  # port 1: nothing listens there
# How many khoa commands run at the same time: each is a new interpreter, busy on a CPU for most of a
# second, so more than one per CPU would only take CPUs from the tests of other files running alongside.
PARALLEL = min(4, os.cpu_count() or 1)
Answer = subprocess.CompletedProcess[str]


def khoa(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KHOA_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=60
    )


def khoa_all(commands: Iterable[Sequence[str]], env: dict[str, str] | None = None) -> list[Answer]:
    """Each command as ``khoa`` runs it, several at the same time; the answers in the commands' order."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(lambda command: khoa(*command, env=env), commands))


class Answers:
    """The answers to a group of commands, run at once (khoa_all) when a test first needs one of them;
    ``answers(*args)`` is then what ``khoa(*args)`` answered (a command not in the group runs now)."""

    def __init__(self, commands: Iterable[Sequence[str]], env: dict[str, str] | None = None) -> None:
        unique = list(dict.fromkeys(tuple(command) for command in commands))
        self.env = env
        self.answers = dict(zip(unique, khoa_all(unique, env), strict=True))

    def __call__(self, *args: str) -> Answer:
        answer = self.answers.get(args)
        return answer if answer is not None else khoa(*args, env=self.env)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Assert the exit code, a single line on stderr holding every fragment, and no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{result.stderr}"
    assert result.returncode == code, f"exit {result.returncode} (expected {code}): {result.stderr}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# -- --database-url ---------------------------------------------------------------------------------

SCHEMES = ["postgres", "postgresql"]
NOT_STORES = ["mysql://khoa@127.0.0.1:1/khoa", "mariadb+pymysql://khoa@127.0.0.1/khoa"]
UNUSABLE_URLS = [
    ("postgresql+psycopg2://khoa@127.0.0.1/khoa", "psycopg2"),
    ("mysql+mysqldb://khoa@127.0.0.1/khoa", "SQLite or PostgreSQL"),
    ("oracle://khoa@127.0.0.1/khoa", "'oracle'"),
    ("postgresql://khoa@127.0.0.1:70000/khoa", "1-65535"),
    ("postgresql://khoa@127.0.0.1", "names no database"),
]


@pytest.fixture(scope="module")
def url_answers() -> Answers:
    """Every command of the --database-url tests below (and --debug's), run at once."""
    return Answers(
        [
            ("account", "list", "--database-url", "notaurl"),
            *(("account", "list", "--database-url", REFUSED_PG.replace("postgresql", s, 1)) for s in SCHEMES),
            *(("functions", "list", "--database-url", url) for url in NOT_STORES),
            *(("account", "list", "--database-url", url) for url, _ in UNUSABLE_URLS),
            ("--debug", "account", "list", "--database-url", REFUSED_PG),
        ]
    )


def test_a_database_url_that_is_not_a_url(url_answers: Answers) -> None:
    line = one_line_error(url_answers("account", "list", "--database-url", "notaurl"), USAGE, "'notaurl'")
    assert "sqlite:///" in line and "postgresql+psycopg://" in line  # what to give instead


@pytest.mark.parametrize("scheme", SCHEMES)
def test_postgres_urls_use_psycopg_3(url_answers: Answers, scheme: str) -> None:
    """``postgres://`` (unknown to SQLAlchemy) and ``postgresql://`` (psycopg2, not installed) both
    reach the database through psycopg 3: here a refused port, reported as such."""
    url = REFUSED_PG.replace("postgresql", scheme, 1)
    line = one_line_error(
        url_answers("account", "list", "--database-url", url),
        FAILURE,
        "postgresql+psycopg://",
        "Connection refused",
    )
    assert "psycopg2" not in line and "check --database-url" in line


@pytest.mark.parametrize("url", NOT_STORES)
def test_mysql_and_mariadb_are_not_stores(url_answers: Answers, url: str) -> None:
    """MySQL and MariaDB are rotation targets, not Khoa's own database: said at once, as a usage error."""
    line = one_line_error(
        url_answers("functions", "list", "--database-url", url), USAGE, "SQLite or PostgreSQL"
    )
    assert "Traceback" not in line


@pytest.mark.parametrize(("url", "fragment"), UNUSABLE_URLS)
def test_database_urls_that_cannot_work_are_usage_errors(
    url_answers: Answers, url: str, fragment: str
) -> None:
    one_line_error(url_answers("account", "list", "--database-url", url), USAGE, fragment)


@pytest.mark.postgres
def test_a_missing_database_and_the_password_is_not_shown(postgres_admin: Any) -> None:
    name = f"khoa_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres:not-this-password@127.0.0.1:5432/{name}"
    line = one_line_error(khoa("account", "list", "--database-url", url), FAILURE, name, "does not exist")
    assert "not-this-password" not in line and "***" in line


def test_the_server_reports_a_refused_database_port(tmp_path: Path) -> None:
    result = khoa(
        "server", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), "--database-url", REFUSED_PG
    )
    one_line_error(result, FAILURE, "Connection refused", "postgresql+psycopg://")
    assert not (tmp_path / "d" / "root.key").exists()


# -- the data directory -------------------------------------------------------------------------------


FILE_COMMANDS = [["account", "list"], ["server", "--port", "9"], ["audit", "verify"]]


@pytest.fixture(scope="module")
def a_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Answers]:
    """A file given as --data-dir to each of FILE_COMMANDS, run at once."""
    file = tmp_path_factory.mktemp("file") / "file"
    file.write_text("not a directory")
    return file, Answers([(*command, "--data-dir", str(file)) for command in FILE_COMMANDS])


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_data_dir_that_is_a_file(a_file: tuple[Path, Answers], command: list[str]) -> None:
    file, answers = a_file
    one_line_error(answers(*command, "--data-dir", str(file)), USAGE, str(file), "is a file")


NO_INSTALLATION_COMMANDS = [
    ["account", "list"],
    ["account", "create"],
    ["functions", "list"],
    ["webhooks", "register", "https://hooks.example/k", "--account", ACCOUNT_ID],
    ["audit", "digest"],
]


@pytest.fixture(scope="module")
def no_installations(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[Path, Path]], Answers]:
    """For each of NO_INSTALLATION_COMMANDS a directory that does not exist and an empty one of its own,
    and the command's answers with either as --data-dir, all run at once."""
    places = []
    for _ in NO_INSTALLATION_COMMANDS:
        base = tmp_path_factory.mktemp("no-installation")
        (base / "empty").mkdir()
        places.append((base / "missing", base / "empty"))
    commands = [
        (*command, "--data-dir", str(directory))
        for command, pair in zip(NO_INSTALLATION_COMMANDS, places, strict=True)
        for directory in pair
    ]
    return places, Answers(commands)


@pytest.mark.parametrize("command", NO_INSTALLATION_COMMANDS)
def test_no_installation_is_reported_and_none_is_created(
    no_installations: tuple[list[tuple[Path, Path]], Answers], command: list[str]
) -> None:
    """A directory that does not exist, and one that exists but holds no installation (a wrong
    --data-dir): refused, and neither is initialised."""
    places, answers = no_installations
    missing, empty = places[NO_INSTALLATION_COMMANDS.index(command)]
    one_line_error(answers(*command, "--data-dir", str(missing)), FAILURE, str(missing), "does not exist")
    assert not missing.exists()
    one_line_error(answers(*command, "--data-dir", str(empty)), FAILURE, "no Khoa installation", "--data-dir")
    assert list(empty.iterdir()) == []


@pytest.mark.postgres
def test_a_database_without_an_installation_is_not_initialised(private_postgres: str) -> None:
    one_line_error(
        khoa("account", "list", "--database-url", private_postgres), FAILURE, "holds no Khoa installation"
    )
    import psycopg

    with psycopg.connect(private_postgres.replace("+psycopg", "")) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_audit_verify_refuses_to_vouch_for_no_trail(tmp_path: Path, fresh_server: KhoaServer) -> None:
    directories = (tmp_path / "missing", tmp_path)
    for answer in khoa_all(("audit", "verify", "--data-dir", str(directory)) for directory in directories):
        line = one_line_error(answer, NO_TRAIL, "no audit trail")
        assert "intact" not in line
    assert not (tmp_path / "missing").exists() and not (tmp_path / "khoa.db").exists()

    # an installation that has recorded nothing yet: no trail either, until a digest is written
    fresh_server.start()
    fresh_server.client("kms").list_keys()  # one event to deliver
    fresh_server.stop()
    data = str(fresh_server.data_dir)
    one_line_error(khoa("audit", "verify", "--data-dir", data), NO_TRAIL, "no digest or log file")
    assert khoa("audit", "digest", "--data-dir", data).returncode == 0
    verified = khoa("audit", "verify", "--data-dir", data)
    assert verified.returncode == 0 and "The trail is intact." in verified.stdout


HELP_COMMANDS = [
    ["server"],
    ["account", "list"],
    ["functions", "register"],
    ["webhooks", "list"],
    ["audit", "verify"],
]


@pytest.fixture(scope="module")
def help_texts() -> Answers:
    """``--help`` of each of HELP_COMMANDS on a 200-column terminal, run at once."""
    return Answers([(*command, "--help") for command in HELP_COMMANDS], env={"COLUMNS": "200"})


def test_the_verify_help_documents_its_exit_codes(help_texts: Answers) -> None:
    shown = help_texts("audit", "verify", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "3 no trail to verify" in text and "1 NOT intact" in text and "0 intact" in text


# -- the server's options ------------------------------------------------------------------------------


BAD_PORTS = ["70000", "0"]


@pytest.fixture(scope="module")
def bad_ports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Answers]:
    """``khoa server`` with each of BAD_PORTS and an empty --data-dir of its own, run at once."""
    directories = {port: tmp_path_factory.mktemp(f"port-{port}") for port in BAD_PORTS}
    return directories, Answers(
        ("server", "--port", port, "--data-dir", str(directory)) for port, directory in directories.items()
    )


@pytest.mark.parametrize("port", BAD_PORTS)
def test_a_port_outside_1_65535_is_refused(bad_ports: tuple[dict[str, Path], Answers], port: str) -> None:
    directories, answers = bad_ports
    directory = directories[port]
    one_line_error(answers("server", "--port", port, "--data-dir", str(directory)), USAGE, port, "1-65535")
    assert list(directory.iterdir()) == []


def test_a_port_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    result = khoa("server", "--data-dir", str(tmp_path), env={"KHOA_PORT": "70000"})
    one_line_error(result, USAGE, "KHOA_PORT", "70000")


def test_tls_files(tmp_path: Path) -> None:
    # Files that do not exist, and (at the same time) files that exist but hold no certificate or key.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    bad_cert, bad_key = tmp_path / "bad-cert.pem", tmp_path / "bad-key.pem"
    bad_cert.write_text("not a certificate")
    bad_key.write_text("not a key")
    base = ("server", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    missing, without_key, without_cert, unusable = khoa_all(
        [
            (*base, "--tls-cert", str(cert), "--tls-key", str(key)),
            (*base, "--tls-cert", str(cert)),
            (*base, "--tls-key", str(key)),
            (*base, "--tls-cert", str(bad_cert), "--tls-key", str(bad_key)),
        ]
    )
    one_line_error(missing, USAGE, str(cert), "does not exist")
    one_line_error(without_key, USAGE, "--tls-cert needs --tls-key")
    one_line_error(without_cert, USAGE, "--tls-key needs --tls-cert")
    one_line_error(unusable, USAGE, "cannot use --tls-cert")
    assert not (tmp_path / "d").exists()


# -- usage, --debug and help ----------------------------------------------------------------------------


def test_usage_errors_are_one_line_with_exit_2() -> None:
    unknown_command, unknown_option = khoa_all([("account", "lst"), ("server", "--no-such-option")])
    one_line_error(unknown_command, USAGE, "lst")
    one_line_error(unknown_option, USAGE, "--no-such-option", "khoa server --help")


def test_debug_shows_the_traceback(url_answers: Answers) -> None:
    result = url_answers("--debug", "account", "list", "--database-url", REFUSED_PG)
    assert result.returncode == FAILURE
    assert "Traceback" in result.stderr


def test_help_keeps_defaults_and_has_no_type_labels(help_texts: Answers) -> None:
    server_help = help_texts("server", "--help")
    assert server_help.returncode == 0
    for default in ("[default: 127.0.0.1]", "[default: 9440]", "[default: .khoa]", "[default: 1]"):
        assert default in server_help.stdout, server_help.stdout
    for command in HELP_COMMANDS:
        shown = help_texts(*command, "--help").stdout
        for label in ("<bool>", "<str>", "<path>", "<int>", "<float>"):
            assert label not in shown, f"{label} in `khoa {' '.join(command)} --help`:\n{shown}"


# -- accounts, lists, --json, delete ----------------------------------------------------------------------


ACCOUNT_ID_COMMANDS = [
    ["functions", "register", "f", "--account", "1234", "--python", "m:f"],
    ["webhooks", "register", "https://hooks.example/k", "--account", "12345678901a"],
    ["account", "create", "--id", "123"],
    ["functions", "delete", "f", "--account", "1234"],
]


@pytest.fixture(scope="module")
def bad_account_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Answers]:
    """Each of ACCOUNT_ID_COMMANDS with an empty --data-dir, run at once."""
    directory = tmp_path_factory.mktemp("account-ids")
    return directory, Answers((*command, "--data-dir", str(directory)) for command in ACCOUNT_ID_COMMANDS)


@pytest.mark.parametrize("command", ACCOUNT_ID_COMMANDS)
def test_account_ids_are_12_digits_everywhere(
    bad_account_ids: tuple[Path, Answers], command: list[str]
) -> None:
    directory, answers = bad_account_ids
    one_line_error(answers(*command, "--data-dir", str(directory)), USAGE, "12 digits")


def test_an_account_that_does_not_exist_is_refused(server: KhoaServer) -> None:
    data = ("--data-dir", str(server.data_dir))
    webhook, function = khoa_all(
        [
            ("webhooks", "register", "https://hooks.example/k", "--account", "999999999999", *data),
            ("functions", "register", "f", "--account", "999999999999", "--python", "m:f", *data),
        ]
    )
    one_line_error(webhook, USAGE, "account 999999999999 does not exist")
    one_line_error(function, USAGE, "account 999999999999 does not exist")


def test_lists_print_json_and_full_width_and_things_can_be_deleted(server: KhoaServer) -> None:
    data = ("--data-dir", str(server.data_dir))
    name = f"a-function-with-a-long-name-{uuid.uuid4().hex}"
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{name}"
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex}"  # never delivered: nothing listens on port 9
    # Commands that do not depend on each other run together: registering, listing, deleting, and
    # looking again.
    registered, hooked = khoa_all(
        [
            ("functions", "register", name, "--account", ACCOUNT_ID, "--python", "m:f", *data),
            ("webhooks", "register", url, "--account", ACCOUNT_ID, "--signing-secret", "k3y-value", *data),
        ]
    )
    assert registered.returncode == 0, registered.stderr
    assert hooked.returncode == 0, hooked.stderr

    table, functions_json, hooks_json, hooks_table, accounts_json = khoa_all(
        [
            ("functions", "list", *data),  # piped: not a terminal
            ("functions", "list", "--json", *data),
            ("webhooks", "list", "--json", *data),
            ("webhooks", "list", *data),
            ("account", "list", "--json", *data),
        ]
    )
    assert table.returncode == 0 and any(arn in line for line in table.stdout.splitlines()), table.stdout
    listed = json.loads(functions_json.stdout)
    assert {"FunctionArn": arn, "Kind": "python", "Target": "m:f"}.items() <= next(
        f for f in listed if f["FunctionArn"] == arn
    ).items()

    hooks = json.loads(hooks_json.stdout)
    hook = next(h for h in hooks if h["Url"] == url)
    assert hook["AccountId"] == ACCOUNT_ID and hook["Signed"] is True
    assert "k3y-value" not in json.dumps(hooks)
    assert url in hooks_table.stdout

    accounts = json.loads(accounts_json.stdout)
    assert ACCOUNT_ID in [a["AccountId"] for a in accounts]

    hook_deleted, function_deleted = khoa_all(
        [("webhooks", "delete", hook["WebhookId"], *data), ("functions", "delete", arn, *data)]
    )
    assert hook_deleted.returncode == 0
    assert function_deleted.returncode == 0
    hooks_after, hook_again, functions_after, function_again = khoa_all(
        [
            ("webhooks", "list", *data),
            ("webhooks", "delete", hook["WebhookId"], *data),
            ("functions", "list", *data),
            ("functions", "delete", name, "--account", ACCOUNT_ID, *data),
        ]
    )
    assert url not in hooks_after.stdout
    one_line_error(hook_again, FAILURE, "no webhook")
    assert arn not in functions_after.stdout
    one_line_error(function_again, FAILURE, "no rotation function")
