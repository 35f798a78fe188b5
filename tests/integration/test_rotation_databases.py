"""The built-in rotators end to end, against a real PostgreSQL cluster (scram-sha-256, its own) and the
machine's MariaDB, through a real server whose functions act as an IAM role:

- single user: the new password works and the old one stops working;
- alternating users: ``<user>_clone`` is created by the master secret's user and the two users take
  turns, so the previous credentials keep working until the next rotation (and stop after it);
- the labels: AWSCURRENT on the new version, AWSPREVIOUS on the old one, no AWSPENDING left.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import mariadb, pgcluster
from tests.support.mariadb import MariaDatabase
from tests.support.mariadb import connect as maria_connect
from tests.support.pgcluster import PgCluster, PgDatabase
from tests.support.rotation import holder, register, rotate_now, rotation_role, stages_of, value_of
from tests.support.server import KhoaServer

# the database fixtures (pytest finds fixtures among a module's names)
pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database
maria_database = mariadb.maria_database


@dataclass
class Target:
    """One database under test, whatever its engine."""

    engine: str  # "postgresql" or "mysql": the built-in rotators' prefix
    secret: Callable[..., dict[str, Any]]
    master: dict[str, Any]
    can_login: Callable[[str, str], bool]
    run_as: Callable[[str, str, str], list[Any]]  # (user, password, sql) -> rows


@pytest.fixture(scope="module")
def functions(server: KhoaServer) -> dict[str, str]:
    """The four built-in rotators, registered once with the rotation role, and (as ``no-role``) a
    Python function registered without one. Each registration is a ``khoa functions register``
    process; they run side by side."""
    suffix = uuid.uuid4().hex[:6]
    rotation_role(server)  # made once, before the registrations that name it
    targets = (
        "postgresql-single-user",
        "postgresql-alternating-users",
        "mysql-single-user",
        "mysql-alternating-users",
    )
    with ThreadPoolExecutor(len(targets) + 1) as registering:
        builtin = {
            target: registering.submit(register, server, f"{target}-{suffix}", target, "builtin")
            for target in targets
        }
        no_role = registering.submit(
            server.register_function, f"no-role-{suffix}", "tests.support.rotators:simple"
        )
    return {target: future.result() for target, future in builtin.items()} | {"no-role": no_role.result()}


def _pg_target(database: PgDatabase) -> Target:
    cluster: PgCluster = database.cluster

    def run_as(user: str, password: str, statement: str) -> list[Any]:
        with cluster.connect(user, password, database.name) as conn:
            cursor = conn.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []

    return Target("postgresql", database.secret, cluster.master_secret(), database.can_login, run_as)


def _maria_target(database: MariaDatabase) -> Target:
    def run_as(user: str, password: str, statement: str) -> list[Any]:
        conn = maria_connect(user, password, database.name)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            conn.close()

    return Target("mysql", database.secret, database.master_secret(), database.can_login, run_as)


@pytest.fixture(params=["postgresql", "mariadb"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "postgresql":
        return _pg_target(request.getfixturevalue("pg_database"))
    return _maria_target(request.getfixturevalue("maria_database"))


def _rotate(server: KhoaServer, sm: Any, name: str) -> str:
    token = rotate_now(server, sm, name)
    described = sm.describe_secret(SecretId=name)
    assert "LastRotatedDate" in described
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token, f"rotation did not finish: {stages}"
    assert holder(stages, "AWSPENDING") is None
    return token


def test_single_user(server: KhoaServer, functions: dict[str, str], target: Target) -> None:
    sm = server.client("secretsmanager")
    original = target.secret()
    name = f"db/single/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(Name=name, SecretString=json.dumps(original))["VersionId"]
    target.run_as(original["username"], original["password"], "CREATE TABLE kept (n INT)")
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=functions[f"{target.engine}-single-user"],
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )

    token = _rotate(server, sm, name)
    stages = stages_of(sm, name)
    assert stages[token] == ["AWSCURRENT"]
    assert stages[first] == ["AWSPREVIOUS"]
    rotated = value_of(sm, name)
    assert rotated["username"] == original["username"]
    assert rotated["password"] != original["password"]
    assert {k: v for k, v in rotated.items() if k != "password"} == {
        k: v for k, v in original.items() if k != "password"
    }
    assert value_of(sm, name, VersionStage="AWSPREVIOUS") == original
    assert target.can_login(rotated["username"], rotated["password"])
    assert not target.can_login(original["username"], original["password"]), "the old password still works"
    assert target.run_as(rotated["username"], rotated["password"], "SELECT COUNT(*) FROM kept") == [(0,)]

    # and again: the previous password stops working too
    second = _rotate(server, sm, name)
    again = value_of(sm, name)
    stages = stages_of(sm, name)
    assert stages[second] == ["AWSCURRENT"] and stages[token] == ["AWSPREVIOUS"]
    assert first not in {v for v, labels in stages.items() if labels}
    assert target.can_login(again["username"], again["password"])
    assert not target.can_login(rotated["username"], rotated["password"])


def test_alternating_users(server: KhoaServer, functions: dict[str, str], target: Target) -> None:
    sm = server.client("secretsmanager")
    suffix = uuid.uuid4().hex[:8]
    master_arn = sm.create_secret(Name=f"db/master/{suffix}", SecretString=json.dumps(target.master))["ARN"]
    original = target.secret(masterarn=master_arn)
    name = f"db/alternating/{suffix}"
    first = sm.create_secret(Name=name, SecretString=json.dumps(original))["VersionId"]
    target.run_as(original["username"], original["password"], "CREATE TABLE shared (n INT)")
    target.run_as(original["username"], original["password"], "INSERT INTO shared VALUES (7)")
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=functions[f"{target.engine}-alternating-users"],
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )

    # 1st rotation: the clone is created with a new password; the original user keeps working
    token1 = _rotate(server, sm, name)
    one = value_of(sm, name)
    stages = stages_of(sm, name)
    assert stages[token1] == ["AWSCURRENT"] and stages[first] == ["AWSPREVIOUS"]
    assert one["username"] == original["username"] + "_clone"
    assert one["password"] != original["password"]
    assert one["masterarn"] == master_arn
    assert value_of(sm, name, VersionStage="AWSPREVIOUS") == original
    assert target.can_login(one["username"], one["password"])
    assert target.can_login(original["username"], original["password"]), "previous credentials must work"
    # the clone has the original user's rights
    assert target.run_as(one["username"], one["password"], "SELECT n FROM shared") == [(7,)]
    # the master secret was only read
    assert value_of(sm, master_arn) == target.master

    # 2nd rotation: back to the original user with a new password; the clone's keep working
    token2 = _rotate(server, sm, name)
    two = value_of(sm, name)
    stages = stages_of(sm, name)
    assert stages[token2] == ["AWSCURRENT"] and stages[token1] == ["AWSPREVIOUS"]
    assert two["username"] == original["username"]
    assert two["password"] not in (original["password"], one["password"])
    assert target.can_login(two["username"], two["password"])
    assert target.can_login(one["username"], one["password"]), "previous credentials must work"
    assert not target.can_login(original["username"], original["password"]), "two rotations ago"

    # 3rd rotation: the clone's password changes, so the credentials from the 1st rotation stop working
    token3 = _rotate(server, sm, name)
    three = value_of(sm, name)
    assert stages_of(sm, name)[token3] == ["AWSCURRENT"]
    assert three["username"] == one["username"]
    assert target.can_login(three["username"], three["password"])
    assert target.can_login(two["username"], two["password"])
    assert not target.can_login(one["username"], one["password"])


def test_the_functions_calls_are_the_roles(server: KhoaServer, functions: dict[str, str]) -> None:
    """Outside --dev a function acts as its role: a function registered without one cannot run, and
    the failure says why (no hidden all-powerful identity)."""
    sm = server.client("secretsmanager")
    arn = functions["no-role"]
    name = f"db/norole/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "x"}))["VersionId"]
    rotate_now(server, sm, name, RotationLambdaARN=arn)
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == first
    assert value_of(sm, name) == {"password": "x"}
    sm.cancel_rotate_secret(SecretId=name)
