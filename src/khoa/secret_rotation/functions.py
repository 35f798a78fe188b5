"""The rotation function registry.

A secret's ``RotationLambdaARN`` (``arn:aws:lambda:REGION:ACCOUNT:function:NAME``) names a function
registered with ``khoa functions register`` in that account and region, as one of:

- ``builtin``: ``postgresql-single-user``, ``postgresql-alternating-users``, ``mysql-single-user`` or
  ``mysql-alternating-users`` (MariaDB included);
- ``python``: ``module:function``, called with the event and a Khoa client;
- ``http``: a URL receiving the event as a JSON POST, signed with an HMAC-SHA256 header.

Each runs with the permissions of the IAM role given at registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from khoa.storage import schema

BUILTINS = (
    "postgresql-single-user",
    "postgresql-alternating-users",
    "mysql-single-user",
    "mysql-alternating-users",
)
KINDS = ("builtin", "python", "http")
_ARN = re.compile(r"^arn:aws:lambda:([a-z0-9-]+):(\d{12}):function:([A-Za-z0-9_-]+)(?::[A-Za-z0-9_$-]+)?$")
_TABLE = schema.rotation_functions


class FunctionError(ValueError):
    """A registration that cannot work (unknown kind, bad target, missing function)."""


@dataclass(frozen=True)
class RotationFunction:
    account_id: str
    region: str
    name: str
    kind: str
    target: str
    role_arn: str | None
    secret_sealed: bytes | None
    timeout_seconds: float

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"


def parse_arn(arn: str) -> tuple[str, str, str] | None:
    match = _ARN.match(arn)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def hmac_binding(account_id: str, region: str, name: str) -> str:
    return f"rotation_functions:{account_id}:{region}:{name}"


def register(
    engine: Engine,
    *,
    account_id: str,
    region: str,
    name: str,
    kind: str,
    target: str,
    role_arn: str | None,
    secret_sealed: bytes | None,
    timeout_seconds: float,
    now: float,
) -> None:
    if kind not in KINDS:
        raise FunctionError(f"unknown function kind {kind!r} (choose {', '.join(KINDS)})")
    if kind == "builtin" and target not in BUILTINS:
        raise FunctionError(f"unknown built-in rotator {target!r} (choose {', '.join(BUILTINS)})")
    if kind == "python" and ":" not in target:
        raise FunctionError("a python function is given as module:function")
    if kind == "http" and not target.startswith(("http://", "https://")):
        raise FunctionError("an http function is given as an http(s) URL")
    with engine.begin() as conn:
        conn.execute(
            delete(_TABLE)
            .where(_TABLE.c.account_id == account_id)
            .where(_TABLE.c.region == region)
            .where(_TABLE.c.name == name)
        )
        conn.execute(
            insert(_TABLE).values(
                account_id=account_id,
                region=region,
                name=name,
                kind=kind,
                target=target,
                role_arn=role_arn,
                secret_sealed=secret_sealed,
                timeout_seconds=timeout_seconds,
                created_at=now,
            )
        )


def delete_function(engine: Engine, *, account_id: str, region: str, name: str) -> bool:
    """Remove a registration; whether there was one."""
    with engine.begin() as conn:
        removed = conn.execute(
            delete(_TABLE)
            .where(_TABLE.c.account_id == account_id)
            .where(_TABLE.c.region == region)
            .where(_TABLE.c.name == name)
        )
    return bool(removed.rowcount)


def lookup(engine: Engine, arn: str) -> RotationFunction | None:
    parsed = parse_arn(arn)
    if parsed is None:
        return None
    region, account_id, name = parsed
    with engine.connect() as conn:
        row = conn.execute(
            select(_TABLE)
            .where(_TABLE.c.account_id == account_id)
            .where(_TABLE.c.region == region)
            .where(_TABLE.c.name == name)
        ).first()
    if row is None:
        return None
    return RotationFunction(
        row.account_id,
        row.region,
        row.name,
        row.kind,
        row.target,
        row.role_arn,
        row.secret_sealed,
        row.timeout_seconds,
    )


def list_functions(engine: Engine) -> list[RotationFunction]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(_TABLE).order_by(_TABLE.c.account_id, _TABLE.c.region, _TABLE.c.name)
        ).all()
    return [
        RotationFunction(
            r.account_id, r.region, r.name, r.kind, r.target, r.role_arn, r.secret_sealed, r.timeout_seconds
        )
        for r in rows
    ]
