"""Helpers for the end-to-end identity tests: callers (users, role sessions, other accounts) as boto3
clients for any service, AWS's AccessDenied message forms, and a second account made with the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"


def across_accounts(principal: str, action: str, resource: str) -> str:
    """AWS's AccessDenied message for a resource of another account: the policy type that decided is
    told only within an account, so a missing resource and a refusing one read the same."""
    return f"User: {principal} is not authorized to perform: {action} on resource: {resource}"


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def implicit(principal: str, action: str, resource: str, kind: str = "identity-based policy") -> str:
    """AWS's message when nothing allows: "... because no <kind> allows the <action> action"
    (kind: "identity-based policy", "resource-based policy", "permissions boundary", "session policy",
    "role trust policy"); on another account's resource, without the clause (:func:`across_accounts`)."""
    if _account(resource) and _account(resource) != _account(principal):
        return across_accounts(principal, action, resource)
    return (
        f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
        f"because no {kind} allows the {action} action"
    )


def explicit(principal: str, action: str, resource: str, kind: str = "an identity-based policy") -> str:
    """AWS's message for an explicit deny: "... with an explicit deny in <kind>"; on another account's
    resource, without the clause (:func:`across_accounts`)."""
    if _account(resource) and _account(resource) != _account(principal):
        return across_accounts(principal, action, resource)
    return (
        f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
        f"with an explicit deny in {kind}"
    )


def resource_policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass
class Caller:
    """Credentials of one identity, and clients signed with them."""

    server: KhoaServer
    arn: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    name: str = ""
    account_id: str = ACCOUNT_ID
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str, *, fresh: bool = False, validate: bool = True) -> Any:
        """A client signed as this caller (cached per service unless ``fresh``: one to add hooks to;
        ``validate=False``: a new one that sends what it is given, so the server's validation answers)."""
        if fresh or not validate:
            return self._make(service, validate)
        if service not in self._clients:
            self._clients[service] = self._make(service, validate)
        return self._clients[service]

    def _make(self, service: str, validate: bool) -> Any:
        extra = {"aws_session_token": self.session_token} if self.session_token else {}
        return self.server.client(
            service,
            validate=validate,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            **extra,
        )


def new_user(
    server: KhoaServer,
    iam: Any,
    *statements: dict[str, Any],
    name: str = "",
    tags: dict[str, str] | None = None,
) -> Caller:
    """A new IAM user of ``iam``'s account with an access key, and (given statements) an inline policy."""
    name = name or unique("user")
    extra = {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]} if tags else {}
    user = iam.create_user(UserName=name, **extra)["User"]
    if statements:
        iam.put_user_policy(
            UserName=name,
            PolicyName="inline",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": list(statements)}),
        )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    account = user["Arn"].split(":")[4]
    return Caller(
        server, user["Arn"], key["AccessKeyId"], key["SecretAccessKey"], name=name, account_id=account
    )


def session(caller: Caller, role_arn: str, name: str = "session", **kwargs: Any) -> Caller:
    """Assume ``role_arn`` as ``caller``; the session's credentials as a Caller."""
    answer = caller.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=name, **kwargs)
    credentials = answer["Credentials"]
    return Caller(
        caller.server,
        answer["AssumedRoleUser"]["Arn"],
        credentials["AccessKeyId"],
        credentials["SecretAccessKey"],
        credentials["SessionToken"],
        name=name,
        account_id=role_arn.split(":")[4],
    )


def create_account(server: KhoaServer) -> Caller:
    """A new account made with ``khoa account create --json`` on the running server's data directory."""
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "account", "create", "--json", "--data-dir", str(server.data_dir)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return account_root(server, done.stdout)


def account_root(server: KhoaServer, created_json: str) -> Caller:
    """The root of the account ``khoa account create --json`` printed."""
    created = json.loads(created_json)
    assert set(created) == {"AccountId", "AccessKeyId", "SecretAccessKey"}
    account = created["AccountId"]
    return Caller(
        server,
        f"arn:aws:iam::{account}:root",
        created["AccessKeyId"],
        created["SecretAccessKey"],
        account_id=account,
    )


def eventually(check: Callable[[], bool], seconds: float = 6.0) -> float:
    """Wait until ``check()`` holds (credential caches last a few seconds); returns the time it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not true within {seconds} seconds")
        time.sleep(0.1)
    return time.monotonic() - started


def parameter_arn(name: str, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:ssm:{REGION}:{account}:parameter{name if name.startswith('/') else '/' + name}"
