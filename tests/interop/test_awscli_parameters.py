"""The aws CLI, unmodified, against Khoa's Parameter Store: create a small parameter tree, read it back
recursively with decryption, label and describe it, and delete it."""

from __future__ import annotations

import uuid

import pytest

from tests.support.awscli import AwsCli, aws_cli
from tests.support.server import KhoaServer


@pytest.fixture
def ssm(server: KhoaServer) -> AwsCli:
    return aws_cli(server.endpoint, service="ssm")


def test_parameter_tree(ssm: AwsCli) -> None:
    root = f"/cli-{uuid.uuid4().hex[:10]}"
    tree = {
        f"{root}/app/url": ("String", "app.example:443"),
        f"{root}/app/hosts": ("StringList", "a.example,b.example"),
        f"{root}/app/db/password": ("SecureString", "cli-db-secret"),
        f"{root}/app/db/user": ("String", "app"),
        f"{root}/top": ("String", "top-level"),
    }
    for name, (kind, value) in tree.items():
        put = ssm.json("put-parameter", "--name", name, "--type", kind, "--value", value)
        assert put["Version"] == 1
        assert put["Tier"] == "Standard"
    again = ssm.run("put-parameter", "--name", f"{root}/top", "--type", "String", "--value", "x", check=False)
    assert again.returncode != 0
    assert "ParameterAlreadyExists" in again.stderr
    ssm.json("put-parameter", "--name", f"{root}/top", "--value", "top-2", "--overwrite")

    # The CLI pages through every result itself (PageSize 1 forces several pages).
    found = ssm.json(
        "get-parameters-by-path",
        "--path",
        root,
        "--recursive",
        "--with-decryption",
        "--page-size",
        "1",
    )
    values = {p["Name"]: (p["Type"], p["Value"]) for p in found["Parameters"]}
    assert values == {**tree, f"{root}/top": ("String", "top-2")}
    encrypted = ssm.json("get-parameters-by-path", "--path", f"{root}/app/db")
    by_name = {p["Name"]: p["Value"] for p in encrypted["Parameters"]}
    assert by_name[f"{root}/app/db/password"] != "cli-db-secret"
    one_level = ssm.json("get-parameters-by-path", "--path", f"{root}/app")
    assert sorted(p["Name"] for p in one_level["Parameters"]) == [f"{root}/app/hosts", f"{root}/app/url"]

    single = ssm.json("get-parameter", "--name", f"{root}/app/db/password", "--with-decryption")
    assert single["Parameter"]["Value"] == "cli-db-secret"
    ssm.json(
        "label-parameter-version",
        "--name",
        f"{root}/top",
        "--parameter-version",
        "1",
        "--labels",
        "first",
    )
    labelled = ssm.json("get-parameter", "--name", f"{root}/top:first")
    assert labelled["Parameter"]["Value"] == "top-level"
    history = ssm.json("get-parameter-history", "--name", f"{root}/top")
    assert [h["Version"] for h in history["Parameters"]] == [1, 2]

    described = ssm.json(
        "describe-parameters",
        "--parameter-filters",
        f"Key=Path,Option=Recursive,Values={root}",
        "Key=Type,Values=SecureString",
    )
    assert [p["Name"] for p in described["Parameters"]] == [f"{root}/app/db/password"]

    names = list(tree)
    deleted = ssm.json("delete-parameters", "--names", *names[:4])
    assert sorted(deleted["DeletedParameters"]) == sorted(names[:4])
    ssm.run("delete-parameter", "--name", f"{root}/top")
    gone = ssm.run("get-parameter", "--name", f"{root}/top", check=False)
    assert gone.returncode != 0
    assert "ParameterNotFound" in gone.stderr
    assert ssm.json("get-parameters-by-path", "--path", root, "--recursive")["Parameters"] == []
