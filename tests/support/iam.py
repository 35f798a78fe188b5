"""Helpers for the IAM tests: policy documents, and clients signed as new users."""

from __future__ import annotations

import json
from typing import Any

from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def trust(principal: Any, action: str = "sts:AssumeRole") -> str:
    return document({"Effect": "Allow", "Principal": principal, "Action": action})


def user_with_key(
    server: KhoaServer, iam: Any, *, policy: str | None = None, name: str = ""
) -> tuple[str, Any]:
    """A new IAM user (with an inline policy when given) and an IAM client signed with its new key."""
    name = name or unique("user")
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    client = server.client(
        "iam", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    return name, client


def unvalidated(server: KhoaServer, service: str = "iam", **credentials: str) -> Any:
    """``server.client(service, validate=False)`` signed with ``key``/``secret`` when given (the fuzz
    regressions import it under this name)."""
    return server.client(
        service,
        validate=False,
        aws_access_key_id=credentials.get("key", ACCESS_KEY_ID),
        aws_secret_access_key=credentials.get("secret", SECRET_ACCESS_KEY),
    )
