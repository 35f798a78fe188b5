"""khoa.access.forgotten: a deleted or renamed user or role stops being named by the stored resource
policies that named it, however the policy's JSON spells the name (``\\u`` escapes, ``\\/``), while
policies that never named it stay byte for byte as their writers sent them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from khoa.access.forgotten import follow_rename, forget_principal, names_role, names_user
from khoa.storage import schema

ACCOUNT = "111122223333"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
# user/bob with its "o" escaped, with its whole name escaped, with "\/" for "/", with the account escaped
ESCAPED_BOB = (
    f"arn:aws:iam::{ACCOUNT}:user/b\\u006fb",
    f"arn:aws:iam::{ACCOUNT}:user/\\u0062\\u006F\\u0062",
    f"arn:aws:iam::{ACCOUNT}:user\\/bob",
    "arn:aws:iam::\\u0031\\u0031\\u0031\\u003122223333:user/\\u0062ob",
)


def _text(value: str, *, element: str = "Principal") -> str:
    """A resource policy whose one statement names ``value`` (JSON text: escapes stay as written)."""
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", element: {"AWS": ["VALUE"]}, "Action": "kms:Decrypt", "Resource": "*"}
        ],
    }
    return json.dumps(document).replace('"VALUE"', f'"{value}"')


@pytest.fixture
def engine() -> Engine:
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    return engine


def _key(engine: Engine, key_id: str, policy: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.kms_keys).values(
                key_id=key_id,
                account_id=ACCOUNT,
                region="us-east-1",
                description="",
                key_spec="SYMMETRIC_DEFAULT",
                key_usage="ENCRYPT_DECRYPT",
                origin="AWS_KMS",
                key_manager="CUSTOMER",
                state="Enabled",
                created_at=0.0,
                policy=policy,
                rotation_enabled=False,
                multi_region=False,
            )
        )


def _role(engine: Engine, name: str, trust: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.iam_principals).values(
                principal_id=f"AROA{name.upper()}",
                account_id=ACCOUNT,
                kind="role",
                name=name,
                name_lower=name.lower(),
                path="/",
                arn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
                created_at=0.0,
                assume_role_policy=trust,
            )
        )


def _secret(engine: Engine, secret_id: str, policy: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id=secret_id,
                account_id=ACCOUNT,
                region="us-east-1",
                name=secret_id,
                arn=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret_id}-AbCdEf",
                created_at=0.0,
                last_changed_at=0.0,
                rotation_enabled=False,
                resource_policy=json.dumps({"ResourcePolicy": policy}),  # as Secrets Manager stores it
            )
        )


def _keys(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {k: p for k, p in conn.execute(select(schema.kms_keys.c.key_id, schema.kms_keys.c.policy))}


def _named(text: str) -> list[Any]:
    statement = json.loads(text)["Statement"][0]
    return list((statement.get("Principal") or statement["NotPrincipal"])["AWS"])


@pytest.mark.parametrize("store_engine", ["sqlite", "postgresql"], indirect=True)
def test_an_escaped_name_is_forgotten_with_the_user(store_engine: Engine) -> None:
    """On both databases: the rows are chosen by SQL (LIKE), then decided on the decoded document."""
    engine = store_engine
    for i, value in enumerate(ESCAPED_BOB):
        _key(engine, f"k{i}", _text(value))
    _key(engine, "not-principal", _text(ESCAPED_BOB[0], element="NotPrincipal"))
    _role(engine, "bob-admin", _text(ESCAPED_BOB[1]).replace("kms:Decrypt", "sts:AssumeRole"))
    _secret(engine, "bob-db", _text(ESCAPED_BOB[0]))
    # Values that never named bob stay as written (escapes included): another user, a case variant
    # (names are compared exactly, as the evaluator compares them), bob's name as a role.
    others = {
        "alice": _text(f"arn:aws:iam::{ACCOUNT}:user/\\u0061lice"),
        "case": _text(f"arn:aws:iam::{ACCOUNT}:user/B\\u006fb"),
        "role": _text(f"arn:aws:iam::{ACCOUNT}:role/b\\u006fb"),
    }
    for key_id, text in others.items():
        _key(engine, key_id, text)

    with engine.begin() as conn:
        changed = forget_principal(conn, "bob", names_user(BOB), "AIDABOB")
    assert changed == len(ESCAPED_BOB) + 3
    keys = _keys(engine)
    for i in range(len(ESCAPED_BOB)):
        assert _named(keys[f"k{i}"]) == ["AIDABOB"]
    assert _named(keys["not-principal"]) == ["AIDABOB"]
    assert {k: keys[k] for k in others} == others  # verbatim
    with engine.connect() as conn:
        trust = conn.execute(select(schema.iam_principals.c.assume_role_policy)).scalar_one()
        stored = conn.execute(select(schema.sm_secrets.c.resource_policy)).scalar_one()
    assert _named(trust) == ["AIDABOB"]
    assert _named(json.loads(stored)["ResourcePolicy"]) == ["AIDABOB"]


def test_an_escaped_role_name_is_forgotten_with_the_role(engine: Engine) -> None:
    _key(engine, "k", _text(f"arn:aws:iam::{ACCOUNT}:role\\/team\\/dep\\u006coyer"))
    with engine.begin() as conn:
        assert forget_principal(conn, "deployer", names_role(ACCOUNT, "deployer"), "AROADEPLOYER") == 1
    assert _named(_keys(engine)["k"]) == ["AROADEPLOYER"]


def test_an_escaped_name_follows_a_rename(engine: Engine) -> None:
    _key(engine, "k", _text(ESCAPED_BOB[0]))
    _secret(engine, "s", _text(ESCAPED_BOB[2]))
    renamed = f"arn:aws:iam::{ACCOUNT}:user/moved/robert"
    with engine.begin() as conn:
        assert follow_rename(conn, "bob", BOB, renamed) == 2
    assert _named(_keys(engine)["k"]) == [renamed]
    with engine.connect() as conn:
        stored = conn.execute(select(schema.sm_secrets.c.resource_policy)).scalar_one()
    assert _named(json.loads(stored)["ResourcePolicy"]) == [renamed]
