"""The ``khoa`` command line run inside the test process, for the commands that only set up or read
what a test looks at (an account, a rotation function). An interpreter's start and imports cost more
than such a command; the commands a test is about still run as subprocesses (tests.support.khoa_cli)."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from khoa.cli.main import run
from tests.support.identity import Caller, account_root
from tests.support.rotation import rotation_role
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def khoa_here(server: KhoaServer, *args: str) -> str:
    """``khoa <args> --data-dir <server's>``, run in this process with the server's ``KHOA_*`` settings
    (and no others): its standard output."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith(("KHOA_", "AWS_"))]:
            patch.delenv(name)
        for name, value in server.env().items():
            if name.startswith("KHOA_"):
                patch.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([*args, "--data-dir", str(server.data_dir)])
    assert code == 0, f"khoa {' '.join(args)} exited {code}: {err.getvalue()}"
    return out.getvalue()


def create_account(server: KhoaServer) -> Caller:
    """A new account made with ``khoa account create --json`` (as tests.support.identity.create_account
    makes one, in this process)."""
    return account_root(server, khoa_here(server, "account", "create", "--json"))


def register(server: KhoaServer, name: str, target: str, kind: str = "python") -> str:
    """A rotation function acting as the rotation role (as tests.support.rotation.register registers
    one, in this process); returns its Lambda ARN."""
    khoa_here(
        server, "functions", "register", name, "--account", ACCOUNT_ID, "--region", REGION, f"--{kind}",
        target, "--role", rotation_role(server),
    )  # fmt: skip
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
