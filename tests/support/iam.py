"""Helpers for the IAM tests: unique names, policy documents, error details, and clients signed as users."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def trust(principal: Any, action: str = "sts:AssumeRole") -> str:
    return document({"Effect": "Allow", "Principal": principal, "Action": action})


def failure(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a ClientError."""
    response = excinfo.value.response
    return (
        response["Error"]["Code"],
        response["Error"].get("Message", ""),
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def unvalidated(server: KhoaServer, service: str = "iam", **credentials: str) -> Any:
    """A client that sends what it is given, so the server's own validation answers."""
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=credentials.get("key", ACCESS_KEY_ID),
        aws_secret_access_key=credentials.get("secret", SECRET_ACCESS_KEY),
        config=Config(retries={"max_attempts": 1}, parameter_validation=False),
    )


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
