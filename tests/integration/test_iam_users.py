"""IAM users, groups, access keys and user tags through boto3 against a signature-checking server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import failure
from tests.support.iam import allow, document, user_with_key
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

USER_ID = re.compile(r"^AIDA[A-Z0-9]{17}$")
GROUP_ID = re.compile(r"^AGPA[A-Z0-9]{17}$")
ACCESS_KEY = re.compile(r"^AKIA[A-Z0-9]{16}$")


# -- users ------------------------------------------------------------------------------------------


def test_create_get_and_list_a_user(iam: Any) -> None:
    name = unique("alice")
    path = f"/{unique('team')}/"
    created = iam.create_user(UserName=name, Path=path)["User"]
    assert created["UserName"] == name
    assert created["Path"] == path
    assert USER_ID.match(created["UserId"])
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user{path}{name}"
    assert "CreateDate" in created

    fetched = iam.get_user(UserName=name)["User"]
    assert fetched["UserId"] == created["UserId"]
    assert fetched["Arn"] == created["Arn"]

    listed = iam.list_users(PathPrefix=path)["Users"]
    assert [u["UserName"] for u in listed] == [name]


def test_user_names_are_unique_case_insensitively(iam: Any) -> None:
    name = unique("Bob")
    iam.create_user(UserName=name)
    with pytest.raises(ClientError) as excinfo:
        iam.create_user(UserName=name.upper())
    assert failure(excinfo) == ("EntityAlreadyExists", f"User with name {name.upper()} already exists.", 409)
    assert iam.get_user(UserName=name.lower())["User"]["UserName"] == name


def test_unknown_user_is_no_such_entity(iam: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        iam.get_user(UserName="nobody-here")
    assert failure(excinfo) == ("NoSuchEntity", "The user with name nobody-here cannot be found.", 404)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_user(UserName="nobody-here")


def test_invalid_user_name_is_a_validation_error(server: KhoaServer) -> None:
    raw = server.client("iam", validate=False)
    with pytest.raises(ClientError) as excinfo:
        raw.create_user(UserName="has space")
    code, message, status = failure(excinfo)
    assert (code, status) == ("ValidationError", 400)
    assert "userName" in message
    with pytest.raises(ClientError) as excinfo:
        raw.create_user(UserName="x" * 65)
    assert failure(excinfo)[0] == "ValidationError"
    with pytest.raises(ClientError) as excinfo:
        raw.create_user(UserName=unique("u"), Path="no-slashes")
    assert failure(excinfo)[0] == "ValidationError"


def test_list_users_paginates(iam: Any) -> None:
    path = f"/{unique('page')}/"
    names = sorted(unique(f"p{i}") for i in range(5))
    for name in names:
        iam.create_user(UserName=name, Path=path)
    first = iam.list_users(PathPrefix=path, MaxItems=2)
    assert first["IsTruncated"] is True
    assert len(first["Users"]) == 2
    seen = [u["UserName"] for u in first["Users"]]
    marker = first["Marker"]
    while marker:
        page = iam.list_users(PathPrefix=path, MaxItems=2, Marker=marker)
        seen += [u["UserName"] for u in page["Users"]]
        marker = page.get("Marker")
    assert sorted(seen) == names
    paginated = [
        u["UserName"] for p in iam.get_paginator("list_users").paginate(PathPrefix=path) for u in p["Users"]
    ]
    assert sorted(paginated) == names


def test_update_user_renames_and_moves_it(iam: Any) -> None:
    old, new = unique("old"), unique("new")
    user_id = iam.create_user(UserName=old)["User"]["UserId"]
    iam.update_user(UserName=old, NewUserName=new, NewPath="/moved/")
    user = iam.get_user(UserName=new)["User"]
    assert user["UserId"] == user_id
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/moved/{new}"
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName=old)


def test_renamed_user_keeps_its_access_keys(server: KhoaServer, iam: Any) -> None:
    name, client = user_with_key(server, iam, policy=document(allow("iam:GetUser")))
    new = unique("renamed")
    iam.update_user(UserName=name, NewUserName=new)
    assert client.get_user()["User"]["UserName"] == new
    keys = iam.list_access_keys(UserName=new)["AccessKeyMetadata"]
    assert len(keys) == 1 and keys[0]["UserName"] == new


def test_rename_onto_an_existing_user_fails(iam: Any) -> None:
    a, b = unique("a"), unique("b")
    iam.create_user(UserName=a)
    iam.create_user(UserName=b)
    with pytest.raises(ClientError) as excinfo:
        iam.update_user(UserName=a, NewUserName=b)
    assert failure(excinfo)[0::2] == ("EntityAlreadyExists", 409)


def test_delete_user_conflicts_until_it_is_bare(iam: Any) -> None:
    name, group = unique("del"), unique("grp")
    iam.create_user(UserName=name)
    iam.create_group(GroupName=group)
    key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=document(allow("kms:*")))
    policy_arn = iam.create_policy(PolicyName=unique("mp"), PolicyDocument=document(allow("kms:*")))[
        "Policy"
    ]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=policy_arn)
    iam.add_user_to_group(GroupName=group, UserName=name)

    expected = [
        (
            "Cannot delete entity, must delete access keys first.",
            lambda: iam.delete_access_key(UserName=name, AccessKeyId=key),
        ),
        (
            "Cannot delete entity, must delete policies first.",
            lambda: iam.delete_user_policy(UserName=name, PolicyName="p"),
        ),
        (
            "Cannot delete entity, must detach all policies first.",
            lambda: iam.detach_user_policy(UserName=name, PolicyArn=policy_arn),
        ),
        (
            "Cannot delete entity, must remove users from group first.",
            lambda: iam.remove_user_from_group(GroupName=group, UserName=name),
        ),
    ]
    for message, remedy in expected:
        with pytest.raises(ClientError) as excinfo:
            iam.delete_user(UserName=name)
        assert failure(excinfo) == ("DeleteConflict", message, 409)
        remedy()
    iam.delete_user(UserName=name)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName=name)


def test_get_user_without_a_name_describes_the_caller(server: KhoaServer, iam: Any) -> None:
    root = iam.get_user()["User"]
    assert root["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    assert root["UserId"] == ACCOUNT_ID
    name, client = user_with_key(server, iam, policy=document(allow("iam:GetUser")))
    assert client.get_user()["User"]["UserName"] == name


def test_create_user_with_tags_and_boundary(iam: Any) -> None:
    boundary = iam.create_policy(PolicyName=unique("bound"), PolicyDocument=document(allow("kms:*")))[
        "Policy"
    ]["Arn"]
    name = unique("tagged")
    created = iam.create_user(
        UserName=name, Tags=[{"Key": "team", "Value": "blue"}], PermissionsBoundary=boundary
    )["User"]
    assert created["Tags"] == [{"Key": "team", "Value": "blue"}]
    assert created["PermissionsBoundary"] == {
        "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
        "PermissionsBoundaryArn": boundary,
    }
    user = iam.get_user(UserName=name)["User"]
    assert user["Tags"] == [{"Key": "team", "Value": "blue"}]
    assert user["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary


def test_create_user_with_a_missing_boundary_fails(iam: Any) -> None:
    missing = f"arn:aws:iam::{ACCOUNT_ID}:policy/{unique('nope')}"
    with pytest.raises(ClientError) as excinfo:
        iam.create_user(UserName=unique("u"), PermissionsBoundary=missing)
    assert failure(excinfo) == ("NoSuchEntity", f"Policy {missing} does not exist or is not attachable.", 404)


# -- user tags --------------------------------------------------------------------------------------


def test_tag_untag_and_list_user_tags(iam: Any) -> None:
    name = unique("tags")
    iam.create_user(UserName=name)
    iam.tag_user(UserName=name, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "a"}])
    iam.tag_user(UserName=name, Tags=[{"Key": "ENV", "Value": "dev"}])  # keys are case-insensitive
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=name)["Tags"]}
    assert tags == {"ENV": "dev", "team": "a"}
    iam.untag_user(UserName=name, TagKeys=["env"])
    assert iam.list_user_tags(UserName=name)["Tags"] == [{"Key": "team", "Value": "a"}]


def test_tag_errors(iam: Any) -> None:
    name = unique("tagerr")
    iam.create_user(UserName=name)
    with pytest.raises(ClientError) as excinfo:
        iam.tag_user(UserName=name, Tags=[{"Key": "a", "Value": "1"}, {"Key": "A", "Value": "2"}])
    assert failure(excinfo)[0::2] == ("InvalidInput", 400)
    iam.tag_user(UserName=name, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    with pytest.raises(ClientError) as excinfo:
        iam.tag_user(UserName=name, Tags=[{"Key": "one-too-many", "Value": "v"}])
    assert failure(excinfo)[0::2] == ("LimitExceeded", 409)
    assert len(iam.list_user_tags(UserName=name)["Tags"]) == 50
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.tag_user(UserName=unique("ghost"), Tags=[{"Key": "a", "Value": "b"}])


# -- groups -----------------------------------------------------------------------------------------


def test_groups_and_membership(iam: Any) -> None:
    group, alice, bob = unique("devs"), unique("alice"), unique("bob")
    created = iam.create_group(GroupName=group, Path="/eng/")["Group"]
    assert GROUP_ID.match(created["GroupId"])
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:group/eng/{group}"
    with pytest.raises(ClientError) as excinfo:
        iam.create_group(GroupName=group.upper())
    assert failure(excinfo) == (
        "EntityAlreadyExists",
        f"Group with name {group.upper()} already exists.",
        409,
    )

    for user in (alice, bob):
        iam.create_user(UserName=user)
        iam.add_user_to_group(GroupName=group, UserName=user)
    iam.add_user_to_group(GroupName=group, UserName=alice)  # again: no error, no duplicate
    fetched = iam.get_group(GroupName=group)
    assert fetched["Group"]["GroupId"] == created["GroupId"]
    assert sorted(u["UserName"] for u in fetched["Users"]) == sorted([alice, bob])
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=alice)["Groups"]] == [group]
    assert group in [g["GroupName"] for g in iam.list_groups(PathPrefix="/eng/")["Groups"]]

    with pytest.raises(ClientError) as excinfo:
        iam.delete_group(GroupName=group)
    assert failure(excinfo) == (
        "DeleteConflict",
        "Cannot delete entity, must remove users from group first.",
        409,
    )
    iam.remove_user_from_group(GroupName=group, UserName=alice)
    iam.remove_user_from_group(GroupName=group, UserName=bob)
    with pytest.raises(ClientError) as excinfo:
        iam.remove_user_from_group(GroupName=group, UserName=bob)
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    assert iam.list_groups_for_user(UserName=alice)["Groups"] == []
    iam.delete_group(GroupName=group)
    with pytest.raises(ClientError) as excinfo:
        iam.get_group(GroupName=group)
    assert failure(excinfo) == ("NoSuchEntity", f"The group with name {group} cannot be found.", 404)


def test_membership_needs_both_to_exist(iam: Any) -> None:
    group = unique("g")
    iam.create_group(GroupName=group)
    with pytest.raises(ClientError) as excinfo:
        iam.add_user_to_group(GroupName=group, UserName="no-such-user")
    assert failure(excinfo) == ("NoSuchEntity", "The user with name no-such-user cannot be found.", 404)
    with pytest.raises(ClientError) as excinfo:
        iam.add_user_to_group(GroupName="no-such-group", UserName="whoever")
    assert failure(excinfo) == ("NoSuchEntity", "The group with name no-such-group cannot be found.", 404)


def test_update_group(iam: Any) -> None:
    group, renamed = unique("g"), unique("g2")
    iam.create_group(GroupName=group)
    iam.update_group(GroupName=group, NewGroupName=renamed, NewPath="/x/")
    assert iam.get_group(GroupName=renamed)["Group"]["Arn"].endswith(f":group/x/{renamed}")


# -- access keys ------------------------------------------------------------------------------------


def test_access_key_lifecycle(server: KhoaServer, iam: Any) -> None:
    name = unique("keys")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="me", PolicyDocument=document(allow("iam:GetUser")))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    assert ACCESS_KEY.match(key["AccessKeyId"])
    assert len(key["SecretAccessKey"]) == 40
    assert key["Status"] == "Active" and key["UserName"] == name

    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key["AccessKeyId"]]
    assert "SecretAccessKey" not in listed[0]

    client = server.client(
        "iam", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    assert client.get_user()["User"]["UserName"] == name
    sts = server.client(
        "sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    identity = sts.get_caller_identity()
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"

    used = iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])
    assert used["UserName"] == name
    assert used["AccessKeyLastUsed"]["ServiceName"] in ("iam", "sts")

    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert iam.list_access_keys(UserName=name)["AccessKeyMetadata"][0]["Status"] == "Inactive"
    with pytest.raises(ClientError) as excinfo:
        client.get_user()
    assert failure(excinfo)[0::2] == ("InvalidClientTokenId", 403)

    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Active")
    assert client.get_user()["User"]["UserName"] == name

    iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    assert iam.list_access_keys(UserName=name)["AccessKeyMetadata"] == []
    with pytest.raises(ClientError) as excinfo:
        client.get_user()
    assert failure(excinfo)[0::2] == ("InvalidClientTokenId", 403)


def test_at_most_two_access_keys_per_user(iam: Any) -> None:
    name = unique("two")
    iam.create_user(UserName=name)
    iam.create_access_key(UserName=name)
    iam.create_access_key(UserName=name)
    with pytest.raises(ClientError) as excinfo:
        iam.create_access_key(UserName=name)
    assert failure(excinfo) == ("LimitExceeded", "Cannot exceed quota for AccessKeysPerUser: 2", 409)


def test_access_key_errors(server: KhoaServer, iam: Any) -> None:
    name, other = unique("kerr"), unique("kother")
    iam.create_user(UserName=name)
    iam.create_user(UserName=other)
    key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    with pytest.raises(ClientError) as excinfo:
        iam.delete_access_key(UserName=other, AccessKeyId=key)
    assert failure(excinfo) == ("NoSuchEntity", f"The Access Key with id {key} cannot be found.", 404)
    with pytest.raises(ClientError) as excinfo:
        iam.create_access_key(UserName="no-such-user")
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    raw = server.client("iam", validate=False)
    with pytest.raises(ClientError) as excinfo:
        raw.update_access_key(UserName=name, AccessKeyId=key, Status="Sleeping")
    assert failure(excinfo)[0::2] == ("ValidationError", 400)


def test_users_manage_their_own_keys_without_user_name(server: KhoaServer, iam: Any) -> None:
    policy = document(
        allow(
            ["iam:CreateAccessKey", "iam:ListAccessKeys", "iam:DeleteAccessKey"],
            "arn:aws:iam::*:user/${aws:username}",
        )
    )
    name, client = user_with_key(server, iam, policy=policy)
    second = client.create_access_key()["AccessKey"]
    assert second["UserName"] == name
    assert len(client.list_access_keys()["AccessKeyMetadata"]) == 2
    client.delete_access_key(AccessKeyId=second["AccessKeyId"])
    assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 1


def test_root_can_hold_its_own_second_key(server: KhoaServer, iam: Any) -> None:
    before = iam.list_access_keys()["AccessKeyMetadata"]
    assert all("UserName" not in k for k in before)
    if len(before) >= 2:
        pytest.skip("the root already has two keys")
    key = iam.create_access_key()["AccessKey"]
    root = server.client(
        "sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    assert root.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    iam.delete_access_key(AccessKeyId=key["AccessKeyId"])
    assert len(iam.list_access_keys()["AccessKeyMetadata"]) == len(before)


# -- authorisation of IAM itself ----------------------------------------------------------------------


def test_iam_calls_are_authorised(server: KhoaServer, iam: Any) -> None:
    target = unique("target")
    iam.create_user(UserName=target)
    name, client = user_with_key(
        server, iam, policy=document(allow("iam:GetUser", f"arn:aws:iam::{ACCOUNT_ID}:user/{target}"))
    )
    assert client.get_user(UserName=target)["User"]["UserName"] == target
    with pytest.raises(ClientError) as excinfo:
        client.list_users()
    code, message, status = failure(excinfo)
    assert (code, status) == ("AccessDenied", 403)
    assert message.startswith(
        f"User: arn:aws:iam::{ACCOUNT_ID}:user/{name} is not authorized to perform: iam:ListUsers"
    )
    with pytest.raises(ClientError) as excinfo:
        client.create_user(UserName=unique("x"))
    assert failure(excinfo)[0] == "AccessDenied"
    with pytest.raises(ClientError) as excinfo:
        client.get_user(UserName=name)  # its own name is not the allowed resource
    assert failure(excinfo)[0] == "AccessDenied"


def test_policy_changes_take_effect_at_once(server: KhoaServer, iam: Any) -> None:
    name, client = user_with_key(server, iam)
    with pytest.raises(ClientError):
        client.list_roles()
    iam.put_user_policy(UserName=name, PolicyName="roles", PolicyDocument=document(allow("iam:ListRoles")))
    client.list_roles()
    iam.delete_user_policy(UserName=name, PolicyName="roles")
    with pytest.raises(ClientError):
        client.list_roles()


def test_group_policies_apply_to_members(server: KhoaServer, iam: Any) -> None:
    group = unique("readers")
    iam.create_group(GroupName=group)
    iam.put_group_policy(GroupName=group, PolicyName="list", PolicyDocument=document(allow("iam:ListGroups")))
    name, client = user_with_key(server, iam)
    with pytest.raises(ClientError):
        client.list_groups()
    iam.add_user_to_group(GroupName=group, UserName=name)
    client.list_groups()
    iam.remove_user_from_group(GroupName=group, UserName=name)
    with pytest.raises(ClientError):
        client.list_groups()
