"""IAM's authorisation table end to end: resources named as AWS names them (real paths, would-be ARNs
for missing entities, both names on a rename) and the condition keys AWS defines for IAM actions
(iam:PolicyARN, iam:PermissionsBoundary, aws:TagKeys, aws:ResourceTag)."""

from __future__ import annotations

from typing import Any

from tests.support.errors import refused
from tests.support.iam import allow, document
from tests.support.identity import Caller, new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def _managed(iam: Any) -> str:
    return str(
        iam.create_policy(PolicyName=unique("p"), PolicyDocument=document(allow("ssm:GetParameter")))[
            "Policy"
        ]["Arn"]
    )


def _denied(caller: Caller, action: str, resource: str) -> tuple[str, str]:
    return (
        "AccessDenied",
        f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action",
    )


def test_a_missing_entity_is_refused_like_an_existing_one(server: KhoaServer, iam: Any) -> None:
    caller = new_user(server, iam)
    present = unique("present")
    iam.create_user(UserName=present)
    absent = unique("absent")
    for name in (present, absent):
        arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"
        assert refused(caller.client("iam").get_user, UserName=name) == _denied(caller, "iam:GetUser", arn)
        assert refused(caller.client("iam").delete_user, UserName=name) == _denied(
            caller, "iam:DeleteUser", arn
        )
    # An entity with a path is named by its real ARN, as AWS names it.
    pathed = unique("pathed")
    iam.create_user(UserName=pathed, Path="/division/")
    assert refused(caller.client("iam").get_user, UserName=pathed) == _denied(
        caller, "iam:GetUser", f"arn:aws:iam::{ACCOUNT_ID}:user/division/{pathed}"
    )


def test_attach_is_limited_by_iam_policy_arn(server: KhoaServer, iam: Any) -> None:
    allowed, other = _managed(iam), _managed(iam)
    caller = new_user(
        server,
        iam,
        allow("iam:AttachUserPolicy", Condition={"ArnEquals": {"iam:PolicyARN": allowed}}),
    )
    target = unique("target")
    iam.create_user(UserName=target)
    client = caller.client("iam")
    client.attach_user_policy(UserName=target, PolicyArn=allowed)
    assert refused(client.attach_user_policy, UserName=target, PolicyArn=other)[0] == "AccessDenied"
    assert [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=target)["AttachedPolicies"]] == [
        allowed
    ]


def test_delegated_administration_with_iam_permissions_boundary(server: KhoaServer, iam: Any) -> None:
    """AWS's pattern for delegating user administration: changes to a user's policies are allowed only
    for users that have the required boundary (the user's current boundary is iam:PermissionsBoundary),
    and users may be created only with it."""
    boundary, granted = _managed(iam), _managed(iam)
    required = {"StringEquals": {"iam:PermissionsBoundary": boundary}}
    caller = new_user(
        server,
        iam,
        allow(
            ["iam:CreateUser", "iam:PutUserPermissionsBoundary", "iam:AttachUserPolicy", "iam:PutUserPolicy"],
            Condition=required,
        ),
    )
    client = caller.client("iam")
    bounded, free = unique("bounded"), unique("free")
    client.create_user(UserName=bounded, PermissionsBoundary=boundary)
    assert refused(client.create_user, UserName=free)[0] == "AccessDenied"
    other_boundary = _managed(iam)
    code, message = refused(client.create_user, UserName=free, PermissionsBoundary=other_boundary)
    assert (code, message) == _denied(caller, "iam:CreateUser", f"arn:aws:iam::{ACCOUNT_ID}:user/{free}")
    iam.create_user(UserName=free)
    client.attach_user_policy(UserName=bounded, PolicyArn=granted)
    client.put_user_policy(
        UserName=bounded, PolicyName="p", PolicyDocument=document(allow("ssm:GetParameter"))
    )
    assert refused(client.attach_user_policy, UserName=free, PolicyArn=granted) == _denied(
        caller, "iam:AttachUserPolicy", f"arn:aws:iam::{ACCOUNT_ID}:user/{free}"
    )
    assert refused(
        client.put_user_policy, UserName=free, PolicyName="p", PolicyDocument=document(allow("*"))
    )[0] == ("AccessDenied")


def test_creating_with_a_boundary_needs_put_boundary_on_the_new_user(server: KhoaServer, iam: Any) -> None:
    boundary = _managed(iam)
    caller = new_user(server, iam, allow("iam:CreateUser"))
    name = unique("u")
    assert refused(caller.client("iam").create_user, UserName=name, PermissionsBoundary=boundary) == _denied(
        caller, "iam:PutUserPermissionsBoundary", f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"
    )
    assert refused(iam.get_user, UserName=name)[0] == "NoSuchEntity"


def test_untag_is_limited_by_aws_tag_keys(server: KhoaServer, iam: Any) -> None:
    caller = new_user(
        server,
        iam,
        allow("iam:UntagUser", Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["temporary"]}}),
    )
    target = unique("t")
    iam.create_user(
        UserName=target, Tags=[{"Key": "temporary", "Value": "1"}, {"Key": "owner", "Value": "x"}]
    )
    client = caller.client("iam")
    assert refused(client.untag_user, UserName=target, TagKeys=["owner"])[0] == "AccessDenied"
    client.untag_user(UserName=target, TagKeys=["temporary"])
    assert iam.list_user_tags(UserName=target)["Tags"] == [{"Key": "owner", "Value": "x"}]


def test_role_operations_see_the_roles_tags(server: KhoaServer, iam: Any) -> None:
    trust = document(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
            "Action": "sts:AssumeRole",
        }
    )
    blue, red = unique("blue"), unique("red")
    iam.create_role(RoleName=blue, AssumeRolePolicyDocument=trust, Tags=[{"Key": "team", "Value": "blue"}])
    iam.create_role(RoleName=red, AssumeRolePolicyDocument=trust, Tags=[{"Key": "team", "Value": "red"}])
    caller = new_user(
        server, iam, allow("iam:GetRole", Condition={"StringEquals": {"iam:ResourceTag/team": "blue"}})
    )
    client = caller.client("iam")
    assert client.get_role(RoleName=blue)["Role"]["RoleName"] == blue
    assert refused(client.get_role, RoleName=red)[0] == "AccessDenied"


def test_a_rename_needs_permission_on_the_new_name_too(server: KhoaServer, iam: Any) -> None:
    old, new = unique("old"), unique("new")
    iam.create_user(UserName=old)
    caller = new_user(server, iam, allow("iam:UpdateUser", f"arn:aws:iam::{ACCOUNT_ID}:user/{old}"))
    assert refused(caller.client("iam").update_user, UserName=old, NewUserName=new) == _denied(
        caller, "iam:UpdateUser", f"arn:aws:iam::{ACCOUNT_ID}:user/{new}"
    )
    assert iam.get_user(UserName=old)["User"]["UserName"] == old


def test_own_access_keys_are_authorised_on_the_callers_user(server: KhoaServer, iam: Any) -> None:
    name = unique("self")
    own_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"
    caller = new_user(server, iam, allow(["iam:ListAccessKeys", "iam:GetUser"], own_arn), name=name)
    client = caller.client("iam")
    assert client.get_user()["User"]["Arn"] == own_arn
    keys = client.list_access_keys()["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [caller.access_key_id]
    assert refused(client.create_access_key) == _denied(caller, "iam:CreateAccessKey", own_arn)
