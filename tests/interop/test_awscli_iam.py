"""The unmodified aws CLI (v1, from the venv) managing IAM users and keys, then signing with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

AWS = Path(sys.executable).with_name("aws")


def _env(tmp_path: Path, access_key_id: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_ACCESS_KEY_ID": access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
        }
    )
    return env


def _aws(
    server: KhoaServer, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(AWS), "--endpoint-url", server.endpoint, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert result.returncode == 0, f"aws {' '.join(args)} failed: {result.stderr}"
    return result


def _json(server: KhoaServer, env: dict[str, str], *args: str) -> Any:
    return json.loads(_aws(server, env, *args, "--output", "json").stdout)


@pytest.fixture
def root_env(tmp_path: Path) -> dict[str, str]:
    if not AWS.exists():
        pytest.fail(f"the aws CLI is not installed in the venv ({AWS})")
    return _env(tmp_path, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def test_create_user_key_and_list_users(server: KhoaServer, root_env: dict[str, str], tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    user = _json(server, root_env, "iam", "create-user", "--user-name", name, "--path", "/cli/")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/cli/{name}"

    key = _json(server, root_env, "iam", "create-access-key", "--user-name", name)["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and len(key["AccessKeyId"]) == 20
    assert key["SecretAccessKey"]

    users = _json(server, root_env, "iam", "list-users", "--path-prefix", "/cli/")["Users"]
    assert name in [u["UserName"] for u in users]
    text = _aws(
        server,
        root_env,
        "iam",
        "list-users",
        "--path-prefix",
        "/cli/",
        "--query",
        "Users[].UserName",
        "--output",
        "text",
    )
    assert name in text.stdout.split()

    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}],
        }
    )
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(policy)
    _aws(
        server,
        root_env,
        "iam",
        "put-user-policy",
        "--user-name",
        name,
        "--policy-name",
        "list",
        "--policy-document",
        f"file://{policy_file}",
    )
    fetched = _json(server, root_env, "iam", "get-user-policy", "--user-name", name, "--policy-name", "list")
    assert fetched["PolicyDocument"] == json.loads(policy)

    user_env = _env(tmp_path, key["AccessKeyId"], key["SecretAccessKey"])
    identity = _json(server, user_env, "sts", "get-caller-identity")
    assert identity["Arn"] == user["Arn"]
    assert name in [u["UserName"] for u in _json(server, user_env, "iam", "list-users")["Users"]]
    denied = _aws(server, user_env, "iam", "create-user", "--user-name", f"{name}-x", check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr

    conflict = _aws(server, root_env, "iam", "delete-user", "--user-name", name, check=False)
    assert conflict.returncode != 0 and "DeleteConflict" in conflict.stderr
    _aws(
        server,
        root_env,
        "iam",
        "delete-access-key",
        "--user-name",
        name,
        "--access-key-id",
        key["AccessKeyId"],
    )
    _aws(server, root_env, "iam", "delete-user-policy", "--user-name", name, "--policy-name", "list")
    _aws(server, root_env, "iam", "delete-user", "--user-name", name)
    missing = _aws(server, root_env, "iam", "get-user", "--user-name", name, check=False)
    assert missing.returncode != 0 and "NoSuchEntity" in missing.stderr


def test_roles_and_managed_policies_from_the_cli(
    server: KhoaServer, root_env: dict[str, str], tmp_path: Path
) -> None:
    role = f"cli-role-{uuid.uuid4().hex[:8]}"
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    created = _json(
        server, root_env, "iam", "create-role", "--role-name", role, "--assume-role-policy-document", trust,
        "--max-session-duration", "7200",
    )["Role"]  # fmt: skip
    assert created["MaxSessionDuration"] == 7200
    bad = _aws(
        server, root_env, "iam", "create-role", "--role-name", f"{role}-bad",
        "--assume-role-policy-document", trust, "--max-session-duration", "60", check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    document = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "kms:Describe*", "Resource": "*"}],
        }
    )
    policy = _json(
        server, root_env, "iam", "create-policy", "--policy-name", f"{role}-p", "--policy-document", document
    )["Policy"]
    _aws(server, root_env, "iam", "attach-role-policy", "--role-name", role, "--policy-arn", policy["Arn"])
    attached = _json(server, root_env, "iam", "list-attached-role-policies", "--role-name", role)[
        "AttachedPolicies"
    ]
    assert attached == [{"PolicyName": f"{role}-p", "PolicyArn": policy["Arn"]}]
    details = _json(server, root_env, "iam", "get-account-authorization-details", "--filter", "Role")
    assert role in [r["RoleName"] for r in details["RoleDetailList"]]
