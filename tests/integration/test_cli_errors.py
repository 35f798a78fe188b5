"""The ``khoa`` command line as an operator meets it: every error is one line saying what is wrong and
what to do, usage errors exit 2, nothing prints a traceback unless ``khoa --debug``; commands other than
``khoa server`` never create an installation; list commands print JSON and full-width tables.

Each case runs the real entry point (``python -m khoa``) in a subprocess, without KHOA_* variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ACCOUNT_ID, KhoaServer, free_port

USAGE = 2
FAILURE = 1
NO_TRAIL = 3
REFUSED_PG = "postgresql://khoa@127.0.0.1:1/khoa"  # port 1: nothing listens there


def khoa(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KHOA_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=60
    )


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


def test_a_database_url_that_is_not_a_url(tmp_path: Path) -> None:
    line = one_line_error(khoa("account", "list", "--database-url", "notaurl"), USAGE, "'notaurl'")
    assert "sqlite:///" in line and "postgresql+psycopg://" in line  # what to give instead


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_use_psycopg_3(scheme: str) -> None:
    """``postgres://`` (unknown to SQLAlchemy) and ``postgresql://`` (psycopg2, not installed) both
    reach the database through psycopg 3: here a refused port, reported as such."""
    url = REFUSED_PG.replace("postgresql", scheme, 1)
    line = one_line_error(
        khoa("account", "list", "--database-url", url), FAILURE, "postgresql+psycopg://", "Connection refused"
    )
    assert "psycopg2" not in line and "check --database-url" in line


@pytest.mark.parametrize("url", ["mysql://khoa@127.0.0.1:1/khoa", "mariadb+pymysql://khoa@127.0.0.1/khoa"])
def test_mysql_and_mariadb_are_not_stores(url: str) -> None:
    """MySQL and MariaDB are rotation targets, not Khoa's own database: said at once, as a usage error."""
    line = one_line_error(khoa("functions", "list", "--database-url", url), USAGE, "SQLite or PostgreSQL")
    assert "Traceback" not in line


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql+psycopg2://khoa@127.0.0.1/khoa", "psycopg2"),
        ("mysql+mysqldb://khoa@127.0.0.1/khoa", "SQLite or PostgreSQL"),
        ("oracle://khoa@127.0.0.1/khoa", "'oracle'"),
        ("postgresql://khoa@127.0.0.1:70000/khoa", "1-65535"),
        ("postgresql://khoa@127.0.0.1", "names no database"),
    ],
)
def test_database_urls_that_cannot_work_are_usage_errors(url: str, fragment: str) -> None:
    one_line_error(khoa("account", "list", "--database-url", url), USAGE, fragment)


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


@pytest.mark.parametrize("command", [["account", "list"], ["server", "--port", "9"], ["audit", "verify"]])
def test_a_data_dir_that_is_a_file(tmp_path: Path, command: list[str]) -> None:
    file = tmp_path / "file"
    file.write_text("not a directory")
    one_line_error(khoa(*command, "--data-dir", str(file)), USAGE, str(file), "is a file")


@pytest.mark.parametrize(
    "command",
    [
        ["account", "list"],
        ["account", "create"],
        ["functions", "list"],
        ["webhooks", "register", "https://hooks.example/k", "--account", ACCOUNT_ID],
        ["audit", "digest"],
    ],
)
def test_no_installation_is_reported_and_none_is_created(tmp_path: Path, command: list[str]) -> None:
    """A directory that does not exist, and one that exists but holds no installation (a wrong
    --data-dir): refused, and neither is initialised."""
    missing = tmp_path / "missing"
    one_line_error(khoa(*command, "--data-dir", str(missing)), FAILURE, str(missing), "does not exist")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(khoa(*command, "--data-dir", str(empty)), FAILURE, "no Khoa installation", "--data-dir")
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
    for directory in (tmp_path / "missing", tmp_path):
        line = one_line_error(
            khoa("audit", "verify", "--data-dir", str(directory)), NO_TRAIL, "no audit trail"
        )
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


def test_the_verify_help_documents_its_exit_codes() -> None:
    shown = khoa("audit", "verify", "--help", env={"COLUMNS": "200"})
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "3 no trail to verify" in text and "1 NOT intact" in text and "0 intact" in text


# -- the server's options ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["70000", "0"])
def test_a_port_outside_1_65535_is_refused(tmp_path: Path, port: str) -> None:
    one_line_error(khoa("server", "--port", port, "--data-dir", str(tmp_path)), USAGE, port, "1-65535")
    assert list(tmp_path.iterdir()) == []


def test_a_port_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    result = khoa("server", "--data-dir", str(tmp_path), env={"KHOA_PORT": "70000"})
    one_line_error(result, USAGE, "KHOA_PORT", "70000")


def test_tls_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    base = ("server", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    one_line_error(
        khoa(*base, "--tls-cert", str(cert), "--tls-key", str(key)), USAGE, str(cert), "does not exist"
    )
    one_line_error(khoa(*base, "--tls-cert", str(cert)), USAGE, "--tls-cert needs --tls-key")
    one_line_error(khoa(*base, "--tls-key", str(key)), USAGE, "--tls-key needs --tls-cert")
    cert.write_text("not a certificate")
    key.write_text("not a key")
    one_line_error(
        khoa(*base, "--tls-cert", str(cert), "--tls-key", str(key)), USAGE, "cannot use --tls-cert"
    )
    assert not (tmp_path / "d").exists()


# -- usage, --debug and help ----------------------------------------------------------------------------


def test_usage_errors_are_one_line_with_exit_2() -> None:
    one_line_error(khoa("account", "lst"), USAGE, "lst")
    one_line_error(khoa("server", "--no-such-option"), USAGE, "--no-such-option", "khoa server --help")


def test_debug_shows_the_traceback() -> None:
    result = khoa("--debug", "account", "list", "--database-url", REFUSED_PG)
    assert result.returncode == FAILURE
    assert "Traceback" in result.stderr


def test_help_keeps_defaults_and_has_no_type_labels() -> None:
    server_help = khoa("server", "--help", env={"COLUMNS": "200"})
    assert server_help.returncode == 0
    for default in ("[default: 127.0.0.1]", "[default: 9440]", "[default: .khoa]", "[default: 1]"):
        assert default in server_help.stdout, server_help.stdout
    for command in (
        ["server"],
        ["account", "list"],
        ["functions", "register"],
        ["webhooks", "list"],
        ["audit", "verify"],
    ):
        shown = khoa(*command, "--help", env={"COLUMNS": "200"}).stdout
        for label in ("<bool>", "<str>", "<path>", "<int>", "<float>"):
            assert label not in shown, f"{label} in `khoa {' '.join(command)} --help`:\n{shown}"


# -- accounts, lists, --json, delete ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["functions", "register", "f", "--account", "1234", "--python", "m:f"],
        ["webhooks", "register", "https://hooks.example/k", "--account", "12345678901a"],
        ["account", "create", "--id", "123"],
        ["functions", "delete", "f", "--account", "1234"],
    ],
)
def test_account_ids_are_12_digits_everywhere(tmp_path: Path, command: list[str]) -> None:
    one_line_error(khoa(*command, "--data-dir", str(tmp_path)), USAGE, "12 digits")


def test_an_account_that_does_not_exist_is_refused(server: KhoaServer) -> None:
    data = ("--data-dir", str(server.data_dir))
    one_line_error(
        khoa("webhooks", "register", "https://hooks.example/k", "--account", "999999999999", *data),
        USAGE,
        "account 999999999999 does not exist",
    )
    one_line_error(
        khoa("functions", "register", "f", "--account", "999999999999", "--python", "m:f", *data),
        USAGE,
        "account 999999999999 does not exist",
    )


def test_lists_print_json_and_full_width_and_things_can_be_deleted(server: KhoaServer) -> None:
    data = ("--data-dir", str(server.data_dir))
    name = f"a-function-with-a-long-name-{uuid.uuid4().hex}"
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{name}"
    registered = khoa("functions", "register", name, "--account", ACCOUNT_ID, "--python", "m:f", *data)
    assert registered.returncode == 0, registered.stderr

    table = khoa("functions", "list", *data)  # piped: not a terminal
    assert table.returncode == 0 and any(arn in line for line in table.stdout.splitlines()), table.stdout
    listed = json.loads(khoa("functions", "list", "--json", *data).stdout)
    assert {"FunctionArn": arn, "Kind": "python", "Target": "m:f"}.items() <= next(
        f for f in listed if f["FunctionArn"] == arn
    ).items()

    url = f"http://127.0.0.1:9/{uuid.uuid4().hex}"  # never delivered: nothing listens on port 9
    hooked = khoa(
        "webhooks", "register", url, "--account", ACCOUNT_ID, "--signing-secret", "k3y-value", *data
    )
    assert hooked.returncode == 0, hooked.stderr
    hooks = json.loads(khoa("webhooks", "list", "--json", *data).stdout)
    hook = next(h for h in hooks if h["Url"] == url)
    assert hook["AccountId"] == ACCOUNT_ID and hook["Signed"] is True
    assert "k3y-value" not in json.dumps(hooks)
    assert url in khoa("webhooks", "list", *data).stdout

    accounts = json.loads(khoa("account", "list", "--json", *data).stdout)
    assert ACCOUNT_ID in [a["AccountId"] for a in accounts]

    assert khoa("webhooks", "delete", hook["WebhookId"], *data).returncode == 0
    assert url not in khoa("webhooks", "list", *data).stdout
    one_line_error(khoa("webhooks", "delete", hook["WebhookId"], *data), FAILURE, "no webhook")
    assert khoa("functions", "delete", arn, *data).returncode == 0
    assert arn not in khoa("functions", "list", *data).stdout
    one_line_error(
        khoa("functions", "delete", name, "--account", ACCOUNT_ID, *data), FAILURE, "no rotation function"
    )
