"""The built-in rotators are no confused deputy: whoever may only PutSecretValue/GetSecretValue on one
application secret must not get the master user (``masterarn``, a secret they cannot read) or the
previous credentials to act on a user they cannot log in as.

AWS's templates refuse in set_secret unless the pending user is the alternate of the current one, the
hosts match, the current credentials log in ("to protect against a confused deputy attack") and the
master secret is of the same host; the single-user template uses the previous credentials only if they
are of the same user. Here against a real PostgreSQL cluster (with a dedicated superuser as the master)
and the machine's MariaDB (its per-test admin user):

- a forged ``<master>_clone`` username would have the master user reset its own password;
- a forged ``<master>`` username would have it create ``<master>_clone`` with the master's rights;
- a forged previous version would have an emergency rotation's revoke_previous reset the master's
  password;
- a forged single-user username would have the previous credentials change another user's password.

Each is refused (the rotation fails at setSecret, saying why, with no value in the event), the master's
password still works, no clone of it exists and the application secret keeps the value written.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest
from psycopg import sql

from khoa.secret_rotation.builtin import DatabaseRotator, RotationStepError
from tests.support import mariadb, pgcluster
from tests.support.iam import allow, deny
from tests.support.identity import new_user
from tests.support.mariadb import MariaDatabase
from tests.support.mariadb import connect as maria_connect
from tests.support.pgcluster import PgCluster, PgDatabase
from tests.support.rotation import holder, register, rotate_now, stages_of, value_of
from tests.support.server import KhoaServer

pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database
maria_database = mariadb.maria_database


@dataclass
class Target:
    engine: str  # the built-in rotators' prefix
    secret: Callable[..., dict[str, Any]]
    master: dict[str, Any]
    can_login: Callable[[str, str], bool]
    user_exists: Callable[[str], bool]


@pytest.fixture(scope="module")
def functions(server: KhoaServer) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        target: register(server, f"deputy-{target}-{suffix}", target, "builtin")
        for target in (
            "postgresql-single-user",
            "postgresql-alternating-users",
            "mysql-alternating-users",
        )
    }


def _pg_role_exists(cluster: PgCluster, name: str) -> bool:
    with cluster.connect() as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


@pytest.fixture
def pg_master(pg_cluster: PgCluster) -> Iterator[dict[str, Any]]:
    """A superuser of its own as the master secret (the cluster's stays untouched whatever happens)."""
    name = f"khoa_master_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    with pg_cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield dict(pg_cluster.master_secret(), username=name, password=password)
    with pg_cluster.connect() as conn:
        for role in (name + "_clone", name):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _maria_user_exists(name: str) -> bool:
    conn = maria_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s", (name,))
            return cursor.fetchone() is not None
    finally:
        conn.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "postgresql":
        database: PgDatabase = request.getfixturevalue("pg_database")
        master = request.getfixturevalue("pg_master")
        cluster = database.cluster
        return Target(
            "postgresql",
            database.secret,
            master,
            lambda user, password: cluster.can_login(user, password),
            lambda name: _pg_role_exists(cluster, name),
        )
    maria: MariaDatabase = request.getfixturevalue("maria_database")
    maria.created_users += [maria.admin_user + "_clone"]  # dropped after, should the attack succeed

    def can_login(user: str, password: str) -> bool:
        try:
            maria_connect(user, password).close()
            return True
        except pymysql.err.OperationalError:
            return False

    return Target("mysql", maria.secret, maria.master_secret(), can_login, _maria_user_exists)


def _failure(server: KhoaServer, arn: str, token: str) -> dict[str, Any]:
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RotationFailed"}]
    )["Events"]
    for event in events:
        record = json.loads(event["CloudTrailEvent"])
        data = record["additionalEventData"]
        if data["versionId"] == token and any(r.get("ARN") == arn for r in record.get("resources", [])):
            assert isinstance(data, dict)
            return data
    raise AssertionError("no RotationFailed event")


def _app_secret(server: KhoaServer, sm: Any, target: Target, function: str) -> tuple[str, str, Any]:
    """The master secret and an application secret rotated once (legitimately: it works); the
    attacker's client may only Put/Get/Describe the application secret."""
    suffix = uuid.uuid4().hex[:8]
    master_arn = sm.create_secret(Name=f"deputy/master/{suffix}", SecretString=json.dumps(target.master))[
        "ARN"
    ]
    app_arn = sm.create_secret(
        Name=f"deputy/app/{suffix}", SecretString=json.dumps(target.secret(masterarn=master_arn))
    )["ARN"]
    token = rotate_now(
        server, sm, app_arn, RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 30}
    )
    assert holder(stages_of(sm, app_arn), "AWSCURRENT") == token, "the legitimate rotation failed"
    rotated = value_of(sm, app_arn)
    assert rotated["username"].endswith("_clone") and target.can_login(
        rotated["username"], rotated["password"]
    )
    attacker = new_user(
        server,
        server.client("iam"),
        allow(
            [
                "secretsmanager:PutSecretValue",
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
            ],
            app_arn,
        ),
        deny("secretsmanager:*", master_arn),
    ).client("secretsmanager")
    with pytest.raises(Exception, match="AccessDenied"):
        attacker.get_secret_value(SecretId=master_arn)
    return master_arn, app_arn, attacker


@pytest.mark.parametrize("forged_suffix", ["_clone", ""], ids=["reset-master-password", "clone-master"])
def test_a_forged_username_does_not_make_the_master_act(
    server: KhoaServer, functions: dict[str, str], target: Target, forged_suffix: str
) -> None:
    sm = server.client("secretsmanager")
    master_arn, app_arn, attacker = _app_secret(
        server, sm, target, functions[f"{target.engine}-alternating-users"]
    )
    master_user = target.master["username"]
    forged = target.secret(masterarn=master_arn, username=master_user + forged_suffix, password="not-it")
    attacker.put_secret_value(SecretId=app_arn, SecretString=json.dumps(forged))
    try:
        token = rotate_now(server, sm, app_arn)  # what the schedule would do
        stages = stages_of(sm, app_arn)
        assert holder(stages, "AWSPENDING") == token, stages
        assert json.loads(attacker.get_secret_value(SecretId=app_arn)["SecretString"]) == forged

        assert target.can_login(master_user, target.master["password"]), "the master's password was changed"
        assert not target.user_exists(master_user + "_clone"), "a clone of the master user was created"
        if forged_suffix:  # the pending user is the master itself: nobody knows a new password for it
            pending = value_of(sm, app_arn, VersionStage="AWSPENDING")
            assert not target.can_login(master_user, pending["password"])

        data = _failure(server, app_arn, token)
        assert data["step"] == "setSecret", data
        assert "AWSCURRENT credentials" in data["error"] and "refusing" in data["error"], data["error"]
        assert target.master["password"] not in json.dumps(data)
        assert target.master["password"] not in server.log_path.read_text(errors="replace")
    finally:
        sm.cancel_rotate_secret(SecretId=app_arn)


def test_revoke_previous_only_changes_the_alternate_user(
    server: KhoaServer, functions: dict[str, str], target: Target
) -> None:
    """An emergency rotation's revoke_previous with a version naming the master user refuses."""
    sm = server.client("secretsmanager")
    master_arn, app_arn, attacker = _app_secret(
        server, sm, target, functions[f"{target.engine}-alternating-users"]
    )
    master_user = target.master["username"]
    forged = target.secret(masterarn=master_arn, username=master_user, password="not-it")
    forged_version = attacker.put_secret_value(
        SecretId=app_arn, SecretString=json.dumps(forged), VersionStages=["FORGED"]
    )["VersionId"]
    rotator = DatabaseRotator(f"{target.engine}-alternating-users")
    with pytest.raises(RotationStepError, match="not the alternate") as refused:
        rotator.revoke_previous(sm, app_arn, forged_version)
    assert target.master["password"] not in str(refused.value)
    assert target.can_login(master_user, target.master["password"]), "the master's password was changed"

    # the legitimate previous version (the original user) is still revoked
    previous = value_of(sm, app_arn, VersionStage="AWSPREVIOUS")
    previous_version = holder(stages_of(sm, app_arn), "AWSPREVIOUS")
    assert previous_version is not None
    assert rotator.revoke_previous(sm, app_arn, previous_version) == previous["username"]
    assert not target.can_login(previous["username"], previous["password"])
    assert target.can_login(master_user, target.master["password"])


def test_single_user_uses_previous_credentials_only_for_the_same_user(
    server: KhoaServer, functions: dict[str, str], pg_database: PgDatabase
) -> None:
    """The current credentials are forged to name another user; the previous (the application's,
    able to manage that user) must not be used to change that user's password."""
    cluster = pg_database.cluster
    victim, victim_password = f"khoa_victim_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(victim), sql.Literal(victim_password)
            )
        )
        app = sql.Identifier(pg_database.username)
        conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(app))
        conn.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(sql.Identifier(victim), app))
    sm = server.client("secretsmanager")
    try:
        name = f"deputy/single/{uuid.uuid4().hex[:8]}"
        original = pg_database.secret()
        sm.create_secret(Name=name, SecretString=json.dumps(original))
        forged = pg_database.secret(username=victim, password="not-it")
        sm.put_secret_value(SecretId=name, SecretString=json.dumps(forged))
        token = rotate_now(
            server,
            sm,
            name,
            RotationLambdaARN=functions["postgresql-single-user"],
            RotationRules={"AutomaticallyAfterDays": 30},
        )
        assert holder(stages_of(sm, name), "AWSPENDING") == token
        assert value_of(sm, name) == forged
        assert cluster.can_login(victim, victim_password), "the victim's password was changed"
        assert pg_database.can_login(original["username"], original["password"])
        data = _failure(server, sm.describe_secret(SecretId=name)["ARN"], token)
        assert data["step"] == "setSecret" and "AWSPREVIOUS" in data["error"], data
        sm.cancel_rotate_secret(SecretId=name)
        sm.update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=token)

        # with the real current value back, the single-user rotation works
        sm.put_secret_value(SecretId=name, SecretString=json.dumps(original))
        token = rotate_now(server, sm, name, RotationLambdaARN=functions["postgresql-single-user"])
        assert holder(stages_of(sm, name), "AWSCURRENT") == token
        rotated = value_of(sm, name)
        assert rotated["username"] == original["username"]
        assert pg_database.can_login(rotated["username"], rotated["password"])
        assert not pg_database.can_login(original["username"], original["password"])
    finally:
        with cluster.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(victim)))
