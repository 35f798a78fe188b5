"""The built-in PostgreSQL rotators against the machine's PostgreSQL (127.0.0.1:5432), which trusts
every local login: a rotation there would "succeed" without changing anything, so it must fail at
testSecret, saying the database does not check passwords, and leave AWSCURRENT as it was.

Successful rotations run against a private cluster that checks passwords (tests/support/pgcluster.py,
in test_rotation_databases.py and the other rotation modules).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import POSTGRES_ADMIN_URL
from tests.support.rotation import holder, register, rotate_now, stages_of, value_of
from tests.support.server import KhoaServer

MESSAGE = "the database does not check passwords"


@pytest.fixture(scope="module")
def trust_role(postgres_admin: Any) -> Iterator[dict[str, Any]]:
    """A login role with a password on the trust-auth server, as a database secret; dropped after
    (with the clone an alternating rotation may have made)."""
    if not _trusts_every_login(postgres_admin):
        pytest.skip(f"{POSTGRES_ADMIN_URL} checks passwords: nothing to show here")
    username = f"khoa_trust_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(16)
    postgres_admin.execute(
        sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(username), sql.Literal(password)
        )
    )
    info = postgres_admin.info
    yield {
        "engine": "postgres",
        "host": info.host,
        "port": info.port,
        "username": username,
        "password": password,
        "dbname": "postgres",
    }
    for user in (username + "_clone", username):
        postgres_admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


def _trusts_every_login(admin: Any) -> bool:
    info = admin.info
    try:
        with psycopg.connect(
            host=info.host,
            port=info.port,
            user=info.user,
            password=secrets.token_urlsafe(16),
            dbname=info.dbname,
            connect_timeout=5,
        ):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="module")
def functions(server: KhoaServer) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        strategy: register(server, f"trust-{strategy}-{suffix}", f"postgresql-{strategy}", "builtin")
        for strategy in ("single-user", "alternating-users")
    }


def _failures(server: KhoaServer, arn: str, token: str) -> list[dict[str, Any]]:
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RotationFailed"}]
    )["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    return [
        r
        for r in records
        if any(res.get("ARN") == arn for res in r.get("resources", []))
        and r["additionalEventData"]["versionId"] == token
    ]


def _rotation_fails(server: KhoaServer, sm: Any, name: str, original: dict[str, Any], function: str) -> None:
    created = sm.create_secret(Name=name, SecretString=json.dumps(original))
    try:
        token = rotate_now(server, sm, name, RotationLambdaARN=function)
        stages = stages_of(sm, name)
        assert holder(stages, "AWSCURRENT") == created["VersionId"], stages
        assert holder(stages, "AWSPENDING") == token
        assert value_of(sm, name) == original
        described = sm.describe_secret(SecretId=name)
        assert "LastRotatedDate" not in described

        failed = _failures(server, created["ARN"], token)
        assert failed, "no RotationFailed event"
        data = failed[0]["additionalEventData"]
        assert data["step"] == "testSecret"
        assert data["error"].startswith(f"testSecret failed: RotationStepError: {MESSAGE}"), data["error"]
        assert original["username"] in data["error"]
        pending = value_of(sm, name, VersionStage="AWSPENDING")["password"]
        assert original["password"] not in json.dumps(failed) and pending not in json.dumps(failed)

        log = server.log_path.read_text(errors="replace")
        lines = [
            line for line in log.splitlines() if created["ARN"] in line and "failed at testSecret" in line
        ]
        assert lines and MESSAGE in lines[-1]
        assert original["password"] not in log and pending not in log
    finally:
        sm.cancel_rotate_secret(SecretId=name)
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_single_user_rotation_fails_on_a_database_that_trusts_every_login(
    server: KhoaServer, functions: dict[str, str], trust_role: dict[str, Any]
) -> None:
    sm = server.client("secretsmanager")
    name = f"db/trust/single/{uuid.uuid4().hex[:8]}"
    _rotation_fails(server, sm, name, trust_role, functions["single-user"])


def test_alternating_rotation_fails_on_a_database_that_trusts_every_login(
    server: KhoaServer, functions: dict[str, str], trust_role: dict[str, Any], postgres_admin: Any
) -> None:
    sm = server.client("secretsmanager")
    info = postgres_admin.info
    master = {
        "engine": "postgres",
        "host": info.host,
        "port": info.port,
        "username": info.user,
        "password": "unused-on-a-trust-server",
        "dbname": "postgres",
    }
    suffix = uuid.uuid4().hex[:8]
    master_arn = sm.create_secret(Name=f"db/trust/master/{suffix}", SecretString=json.dumps(master))["ARN"]
    try:
        original = dict(trust_role, masterarn=master_arn)
        _rotation_fails(
            server, sm, f"db/trust/alternating/{suffix}", original, functions["alternating-users"]
        )
    finally:
        sm.delete_secret(SecretId=master_arn, ForceDeleteWithoutRecovery=True)
