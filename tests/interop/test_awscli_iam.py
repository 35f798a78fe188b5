"""The unmodified aws CLI (v1, from the venv) managing IAM users and keys, then signing with them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support.awscli import AwsCli, aws_cli
from tests.support.server import ACCOUNT_ID, KhoaServer


@pytest.fixture
def root(server: KhoaServer) -> AwsCli:
    return aws_cli(server.endpoint)


def test_create_user_key_and_list_users(server: KhoaServer, root: AwsCli, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    user = root.json("iam", "create-user", "--user-name", name, "--path", "/cli/")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/cli/{name}"

    key = root.json("iam", "create-access-key", "--user-name", name)["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and len(key["AccessKeyId"]) == 20
    assert key["SecretAccessKey"]

    users = root.json("iam", "list-users", "--path-prefix", "/cli/")["Users"]
    assert name in [u["UserName"] for u in users]
    text = root.run(
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
    root.run(
        "iam",
        "put-user-policy",
        "--user-name",
        name,
        "--policy-name",
        "list",
        "--policy-document",
        f"file://{policy_file}",
    )
    fetched = root.json("iam", "get-user-policy", "--user-name", name, "--policy-name", "list")
    assert fetched["PolicyDocument"] == json.loads(policy)

    as_user = aws_cli(server.endpoint, credentials=(key["AccessKeyId"], key["SecretAccessKey"]))
    identity = as_user.json("sts", "get-caller-identity")
    assert identity["Arn"] == user["Arn"]
    assert name in [u["UserName"] for u in as_user.json("iam", "list-users")["Users"]]
    denied = as_user.run("iam", "create-user", "--user-name", f"{name}-x", check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr

    conflict = root.run("iam", "delete-user", "--user-name", name, check=False)
    assert conflict.returncode != 0 and "DeleteConflict" in conflict.stderr
    root.run(
        "iam",
        "delete-access-key",
        "--user-name",
        name,
        "--access-key-id",
        key["AccessKeyId"],
    )
    root.run("iam", "delete-user-policy", "--user-name", name, "--policy-name", "list")
    root.run("iam", "delete-user", "--user-name", name)
    missing = root.run("iam", "get-user", "--user-name", name, check=False)
    assert missing.returncode != 0 and "NoSuchEntity" in missing.stderr


def test_roles_and_managed_policies_from_the_cli(root: AwsCli) -> None:
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
    created = root.json(
        "iam", "create-role", "--role-name", role, "--assume-role-policy-document", trust,
        "--max-session-duration", "7200",
    )["Role"]  # fmt: skip
    assert created["MaxSessionDuration"] == 7200
    bad = root.run(
        "iam", "create-role", "--role-name", f"{role}-bad",
        "--assume-role-policy-document", trust, "--max-session-duration", "60", check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    document = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "kms:Describe*", "Resource": "*"}],
        }
    )
    policy = root.json("iam", "create-policy", "--policy-name", f"{role}-p", "--policy-document", document)[
        "Policy"
    ]
    root.run("iam", "attach-role-policy", "--role-name", role, "--policy-arn", policy["Arn"])
    attached = root.json("iam", "list-attached-role-policies", "--role-name", role)["AttachedPolicies"]
    assert attached == [{"PolicyName": f"{role}-p", "PolicyArn": policy["Arn"]}]
    details = root.json("iam", "get-account-authorization-details", "--filter", "Role")
    assert role in [r["RoleName"] for r in details["RoleDetailList"]]
