"""IAM roles: trust policies, session duration bounds, updates, tags, boundaries and deletion."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import failure
from tests.support.iam import allow, document, trust, user_with_key
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

ROLE_ID = re.compile(r"^AROA[A-Z0-9]{17}$")
ACCOUNT_TRUST = trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"})


def test_create_and_get_a_role(iam: Any) -> None:
    name = unique("app")
    created = iam.create_role(
        RoleName=name,
        Path="/service/",
        AssumeRolePolicyDocument=ACCOUNT_TRUST,
        Description="application role",
        MaxSessionDuration=7200,
        Tags=[{"Key": "app", "Value": "web"}],
    )["Role"]
    assert ROLE_ID.match(created["RoleId"])
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/service/{name}"
    assert created["AssumeRolePolicyDocument"] == json.loads(ACCOUNT_TRUST)
    assert created["MaxSessionDuration"] == 7200
    assert created["Tags"] == [{"Key": "app", "Value": "web"}]

    role = iam.get_role(RoleName=name.upper())["Role"]
    assert role["RoleName"] == name
    assert role["Description"] == "application role"
    assert role["AssumeRolePolicyDocument"] == json.loads(ACCOUNT_TRUST)
    assert role["Tags"] == [{"Key": "app", "Value": "web"}]
    assert name in [r["RoleName"] for r in iam.list_roles(PathPrefix="/service/")["Roles"]]


def test_default_max_session_duration_is_one_hour(iam: Any) -> None:
    role = iam.create_role(RoleName=unique("r"), AssumeRolePolicyDocument=ACCOUNT_TRUST)["Role"]
    assert role["MaxSessionDuration"] == 3600
    assert role["Path"] == "/"


@pytest.mark.parametrize("duration", [3599, 43201, 0])
def test_max_session_duration_bounds(server: KhoaServer, duration: int) -> None:
    raw = server.client("iam", validate=False)
    with pytest.raises(ClientError) as excinfo:
        raw.create_role(
            RoleName=unique("r"), AssumeRolePolicyDocument=ACCOUNT_TRUST, MaxSessionDuration=duration
        )
    code, message, status = failure(excinfo)
    assert (code, status) == ("ValidationError", 400)
    assert "maxSessionDuration" in message


def test_max_session_duration_bounds_on_update(server: KhoaServer, iam: Any) -> None:
    name = unique("r")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST)
    with pytest.raises(ClientError) as excinfo:
        server.client("iam", validate=False).update_role(RoleName=name, MaxSessionDuration=50000)
    assert failure(excinfo)[0] == "ValidationError"
    iam.update_role(RoleName=name, MaxSessionDuration=43200, Description="longer")
    role = iam.get_role(RoleName=name)["Role"]
    assert role["MaxSessionDuration"] == 43200
    assert role["Description"] == "longer"
    updated = iam.update_role_description(RoleName=name, Description="again")["Role"]
    assert updated["Description"] == "again"


@pytest.mark.parametrize(
    "policy",
    [
        "not json",
        document({"Effect": "Allow", "Action": "sts:AssumeRole"}),  # no principal
        document({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole", "Resource": "*"}),
        document({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt"}),
        document({"Effect": "Maybe", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}),
        document({"Effect": "Allow", "Principal": {"AWS": "not-an-arn"}, "Action": "sts:AssumeRole"}),
        document({"Effect": "Allow", "Principal": {"Bogus": "x"}, "Action": "sts:AssumeRole"}),
        document(
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEqualz": {"a": "b"}},
            }
        ),
    ],
)
def test_trust_policy_is_validated(iam: Any, policy: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        iam.create_role(RoleName=unique("bad"), AssumeRolePolicyDocument=policy)
    assert failure(excinfo)[0::2] == ("MalformedPolicyDocument", 400)


def test_trust_policy_accepts_the_usual_principals(iam: Any) -> None:
    policy = document(
        {
            "Effect": "Allow",
            "Principal": {
                "AWS": [
                    ACCOUNT_ID,
                    "arn:aws:iam::444455556666:role/ops/deployer",
                    "arn:aws:iam::444455556666:user/ci",
                ],
                "Service": "lambda.amazonaws.com",
            },
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {"sts:ExternalId": "xyz"}},
        }
    )
    iam.create_role(RoleName=unique("ok"), AssumeRolePolicyDocument=policy)


def test_update_assume_role_policy(iam: Any) -> None:
    name = unique("trusting")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST)
    other = trust({"AWS": "arn:aws:iam::444455556666:root"})
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=other)
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == json.loads(other)
    with pytest.raises(ClientError) as excinfo:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=document(allow("sts:AssumeRole")))
    assert failure(excinfo)[0] == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as excinfo:
        iam.update_assume_role_policy(RoleName=unique("ghost"), PolicyDocument=other)
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)


def test_role_names_are_unique_case_insensitively(iam: Any) -> None:
    name = unique("Dup")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST)
    with pytest.raises(ClientError) as excinfo:
        iam.create_role(RoleName=name.lower(), AssumeRolePolicyDocument=ACCOUNT_TRUST)
    assert failure(excinfo) == ("EntityAlreadyExists", f"Role with name {name.lower()} already exists.", 409)


def test_delete_role_conflicts(iam: Any) -> None:
    name = unique("busy")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST)
    iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=document(allow("kms:Decrypt")))
    arn = iam.create_policy(PolicyName=unique("mp"), PolicyDocument=document(allow("kms:*")))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    with pytest.raises(ClientError) as excinfo:
        iam.delete_role(RoleName=name)
    assert failure(excinfo) == ("DeleteConflict", "Cannot delete entity, must delete policies first.", 409)
    iam.delete_role_policy(RoleName=name, PolicyName="inline")
    with pytest.raises(ClientError) as excinfo:
        iam.delete_role(RoleName=name)
    assert failure(excinfo) == (
        "DeleteConflict",
        "Cannot delete entity, must detach all policies first.",
        409,
    )
    iam.detach_role_policy(RoleName=name, PolicyArn=arn)
    iam.delete_role(RoleName=name)
    with pytest.raises(ClientError) as excinfo:
        iam.get_role(RoleName=name)
    assert failure(excinfo) == ("NoSuchEntity", f"The role with name {name} cannot be found.", 404)


def test_role_tags(iam: Any) -> None:
    name = unique("tagged")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST)
    iam.tag_role(RoleName=name, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    iam.untag_role(RoleName=name, TagKeys=["a"])
    assert iam.list_role_tags(RoleName=name)["Tags"] == [{"Key": "b", "Value": "2"}]
    assert iam.get_role(RoleName=name)["Role"]["Tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.list_role_tags(RoleName=unique("ghost"))


def test_role_permissions_boundary(iam: Any) -> None:
    boundary = iam.create_policy(PolicyName=unique("cap"), PolicyDocument=document(allow("kms:*")))["Policy"][
        "Arn"
    ]
    name = unique("bounded")
    role = iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST, PermissionsBoundary=boundary
    )["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    assert iam.get_policy(PolicyArn=boundary)["Policy"]["PermissionsBoundaryUsageCount"] == 1
    iam.delete_role_permissions_boundary(RoleName=name)
    assert "PermissionsBoundary" not in iam.get_role(RoleName=name)["Role"]
    iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=boundary)
    assert iam.get_role(RoleName=name)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    missing = f"arn:aws:iam::{ACCOUNT_ID}:policy/{unique('none')}"
    with pytest.raises(ClientError) as excinfo:
        iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=missing)
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as excinfo:
        iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary="arn:aws:s3:::not-a-policy-arn")
    assert failure(excinfo)[0::2] == ("InvalidInput", 400)


def test_user_permissions_boundary_caps_its_policies(server: KhoaServer, iam: Any) -> None:
    boundary = iam.create_policy(PolicyName=unique("cap"), PolicyDocument=document(allow("iam:ListRoles")))[
        "Policy"
    ]["Arn"]
    name, client = user_with_key(server, iam, policy=document(allow(["iam:ListRoles", "iam:ListGroups"])))
    client.list_groups()
    iam.put_user_permissions_boundary(UserName=name, PermissionsBoundary=boundary)
    assert iam.get_user(UserName=name)["User"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    client.list_roles()
    with pytest.raises(ClientError) as excinfo:
        client.list_groups()
    code, message, _ = failure(excinfo)
    assert code == "AccessDenied" and "permissions boundary" in message
    iam.delete_user_permissions_boundary(UserName=name)
    client.list_groups()


def test_assume_role_uses_the_stored_role(server: KhoaServer, iam: Any) -> None:
    name = unique("assumable")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ACCOUNT_TRUST, MaxSessionDuration=7200)
    iam.put_role_policy(RoleName=name, PolicyName="list", PolicyDocument=document(allow("iam:ListRoles")))
    assert iam.get_role(RoleName=name)["Role"]["RoleLastUsed"] == {}
    # Roles may not be assumed by the root user: assume it as a user allowed to.
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    creds = assumer.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", RoleSessionName="session", DurationSeconds=7200
    )["Credentials"]
    session = server.client(
        "iam",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    session.list_roles()
    assert "LastUsedDate" in iam.get_role(RoleName=name)["Role"]["RoleLastUsed"]
    with pytest.raises(ClientError) as excinfo:
        session.list_users()
    assert failure(excinfo)[0] == "AccessDenied"
    with pytest.raises(ClientError) as excinfo:
        session.create_access_key()
    assert failure(excinfo) == (
        "ValidationError",
        "Must specify userName when calling with non-User credentials",
        400,
    )
