"""``khoa`` loads a command's module only when that command runs (khoa.cli.lazy): a start stays cheap
(hundreds of tests and scripts run ``khoa``), while every command keeps its name, help and order."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import typer
from typer.testing import CliRunner

from khoa.cli.lazy import LazyCommand, LazyGroup, loaded_commands
from khoa.cli.main import COMMANDS, app

HEAVY = ("sqlalchemy", "alembic", "botocore", "psycopg", "uvicorn", "khoa.bootstrap", "khoa.settings")


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def test_starting_khoa_imports_no_command_and_no_database_layer() -> None:
    loaded = _modules_after("import khoa.cli.main")
    heavy = [name for name in loaded if name.split(".")[0] in HEAVY or name in HEAVY]
    commands = {entry.module for entry in COMMANDS.values()} - {"khoa.cli.env"}  # env: AWS_CONTEXT only
    assert not heavy, f"import khoa.cli.main loaded {heavy}"
    assert not commands & set(loaded)


def test_a_command_loads_its_own_module_only() -> None:
    loaded = set(_modules_after("from khoa.cli.main import run\nrun(['account', '--help'])"))
    assert "khoa.cli.account" in loaded
    others = {entry.module for name, entry in COMMANDS.items() if name not in ("account", "env", "aws")}
    assert not others & loaded


def test_the_root_lists_every_command_in_order_without_loading_them() -> None:
    group: Any = typer.main.get_command(app)
    offered = [name for name, entry in COMMANDS.items() if entry.available()]
    assert group.list_commands(None) == ["server", *offered]
    assert list(loaded_commands(group)) == ["server"]
    assert "console-link" in COMMANDS  # the web console's command (issue 19), offered once it exists


def _hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


class _Demo(LazyGroup):
    registry = {
        "hello": LazyCommand(f"{__name__}:_hello"),
        "absent": LazyCommand("tests.unit.no_such_module_here:command", optional=True),
    }


def test_an_optional_command_is_offered_only_when_its_module_exists() -> None:
    demo = typer.Typer(cls=_Demo)

    @demo.callback()
    def root() -> None:
        """A group (a Typer with one command and no callback would be that command alone)."""

    runner = CliRunner()
    listed = runner.invoke(demo, ["--help"])
    assert listed.exit_code == 0
    assert "hello" in listed.output and "Say hello." in listed.output
    assert "absent" not in listed.output
    assert runner.invoke(demo, ["hello", "--name", "khoa"]).output == "hello khoa\n"
    missing = runner.invoke(demo, ["absent"])
    assert missing.exit_code == 2 and "No such command 'absent'" in missing.output
