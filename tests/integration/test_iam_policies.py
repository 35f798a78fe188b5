"""Inline and managed IAM policies: validation, versions, attachments and the listings around them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import failure
from tests.support.iam import allow, deny, document, trust, user_with_key
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

POLICY_ID = re.compile(r"^ANPA[A-Z0-9]{17}$")
KMS_READ = document(allow(["kms:Describe*", "kms:List*"]))


def _role(iam: Any) -> str:
    name = unique("role")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": ACCOUNT_ID}))
    return name


def _group(iam: Any) -> str:
    name = unique("group")
    iam.create_group(GroupName=name)
    return name


def _user(iam: Any) -> str:
    name = unique("user")
    iam.create_user(UserName=name)
    return name


# -- inline policies ----------------------------------------------------------------------------------

KINDS = [
    ("user", "UserName", _user),
    ("group", "GroupName", _group),
    ("role", "RoleName", _role),
]


@pytest.mark.parametrize(("kind", "param", "make"), KINDS)
def test_inline_policy_lifecycle(iam: Any, kind: str, param: str, make: Any) -> None:
    owner = make(iam)
    put = getattr(iam, f"put_{kind}_policy")
    get = getattr(iam, f"get_{kind}_policy")
    remove = getattr(iam, f"delete_{kind}_policy")
    listing = getattr(iam, f"list_{kind}_policies")

    # A single statement object (not a list), kept exactly as written.
    text = (
        '{"Version": "2012-10-17", '
        '"Statement": {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}}'
    )
    put(**{param: owner}, PolicyName="b-policy", PolicyDocument=text)
    put(**{param: owner}, PolicyName="a-policy", PolicyDocument=KMS_READ)
    got = get(**{param: owner}, PolicyName="b-policy")
    assert got[param] == owner
    assert got["PolicyName"] == "b-policy"
    assert got["PolicyDocument"] == json.loads(text)
    assert listing(**{param: owner})["PolicyNames"] == ["a-policy", "b-policy"]

    put(**{param: owner}, PolicyName="b-policy", PolicyDocument=KMS_READ)  # replaces
    assert get(**{param: owner}, PolicyName="b-policy")["PolicyDocument"] == json.loads(KMS_READ)

    remove(**{param: owner}, PolicyName="b-policy")
    with pytest.raises(ClientError) as excinfo:
        get(**{param: owner}, PolicyName="b-policy")
    assert failure(excinfo) == ("NoSuchEntity", f"The {kind} policy with name b-policy cannot be found.", 404)
    with pytest.raises(ClientError) as excinfo:
        remove(**{param: owner}, PolicyName="b-policy")
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as excinfo:
        put(**{param: unique("ghost")}, PolicyName="p", PolicyDocument=KMS_READ)
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)


def test_inline_documents_come_back_url_encoded_on_the_wire(server: KhoaServer, iam: Any) -> None:
    user = _user(iam)
    text = document(allow("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/*"))
    iam.put_user_policy(UserName=user, PolicyName="enc", PolicyDocument=text)
    raw: dict[str, Any] = {}

    def capture(response_dict: dict[str, Any], **_: Any) -> None:
        raw["body"] = response_dict["body"]

    client = server.client("iam")
    client.meta.events.register("before-parse.iam.GetUserPolicy", capture)
    client.get_user_policy(UserName=user, PolicyName="enc")
    assert b"%7B%22Version%22%3A%20%222012-10-17%22" in raw["body"]


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ("{not json", "syntax"),
        (json.dumps({"Version": "2012-10-17"}), "no statement"),
        (document({"Effect": "Allow", "Action": "kms:*"}), "no resource"),
        (document({"Effect": "Permit", "Action": "kms:*", "Resource": "*"}), "bad effect"),
        (document({"Effect": "Allow", "Resource": "*"}), "no action"),
        (document(allow("kms:*", Principal={"AWS": "*"})), "principal in an identity policy"),
        (document(allow("kms:*", Condition={"StringEqualsish": {"aws:username": "x"}})), "unknown operator"),
        (document(allow("Decrypt")), "action without a service prefix"),
        (document(allow("kms:*", "not-an-arn")), "resource that is not an ARN"),
        (json.dumps({"Version": "2013-01-01", "Statement": [allow("kms:*")]}), "bad version"),
    ],
)
def test_identity_policies_are_validated(iam: Any, policy: str, why: str) -> None:
    user = _user(iam)
    with pytest.raises(ClientError) as excinfo:
        iam.put_user_policy(UserName=user, PolicyName="bad", PolicyDocument=policy)
    assert failure(excinfo)[0::2] == ("MalformedPolicyDocument", 400), why
    with pytest.raises(ClientError) as excinfo:
        iam.create_policy(PolicyName=unique("bad"), PolicyDocument=policy)
    assert failure(excinfo)[0::2] == ("MalformedPolicyDocument", 400), why


def test_inline_policy_size_is_limited(iam: Any) -> None:
    user = _user(iam)
    actions = [f"kms:Action{i:04d}" for i in range(200)]  # ~3,000 characters: over a user's 2,048
    with pytest.raises(ClientError) as excinfo:
        iam.put_user_policy(UserName=user, PolicyName="big", PolicyDocument=document(allow(actions)))
    assert failure(excinfo) == (
        "LimitExceeded",
        f"Maximum policy size of 2048 bytes exceeded for user {user}",
        409,
    )
    role = _role(iam)
    iam.put_role_policy(RoleName=role, PolicyName="big", PolicyDocument=document(allow(actions)))  # 10,240


# -- managed policies ---------------------------------------------------------------------------------


def test_create_get_and_delete_a_managed_policy(iam: Any) -> None:
    name = unique("Managed")
    created = iam.create_policy(
        PolicyName=name,
        Path="/app/",
        PolicyDocument=KMS_READ,
        Description="read keys",
        Tags=[{"Key": "owner", "Value": "platform"}],
    )["Policy"]
    arn = f"arn:aws:iam::{ACCOUNT_ID}:policy/app/{name}"
    assert created["Arn"] == arn
    assert POLICY_ID.match(created["PolicyId"])
    assert created["DefaultVersionId"] == "v1"
    assert created["AttachmentCount"] == 0
    assert created["IsAttachable"] is True

    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    assert policy["Description"] == "read keys"
    assert policy["Tags"] == [{"Key": "owner", "Value": "platform"}]
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == json.loads(KMS_READ)
    assert version["IsDefaultVersion"] is True

    with pytest.raises(ClientError) as excinfo:
        iam.create_policy(PolicyName=name.lower(), PolicyDocument=KMS_READ)
    assert failure(excinfo) == (
        "EntityAlreadyExists",
        f"A policy called {name.lower()} already exists. Duplicate names are not allowed.",
        409,
    )

    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(ClientError) as excinfo:
        iam.get_policy(PolicyArn=arn)
    assert failure(excinfo) == ("NoSuchEntity", f"Policy {arn} was not found.", 404)


def test_policy_tags(iam: Any) -> None:
    arn = iam.create_policy(PolicyName=unique("tp"), PolicyDocument=KMS_READ)["Policy"]["Arn"]
    iam.tag_policy(PolicyArn=arn, Tags=[{"Key": "k", "Value": "v"}])
    assert iam.list_policy_tags(PolicyArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    iam.untag_policy(PolicyArn=arn, TagKeys=["k"])
    assert iam.list_policy_tags(PolicyArn=arn)["Tags"] == []


def test_managed_policy_size_is_limited(iam: Any) -> None:
    actions = [f"kms:Action{i:04d}" for i in range(500)]
    with pytest.raises(ClientError) as excinfo:
        iam.create_policy(PolicyName=unique("huge"), PolicyDocument=document(allow(actions)))
    assert failure(excinfo) == ("LimitExceeded", "Cannot exceed quota for PolicySize: 6144", 409)


def test_policy_versions(iam: Any) -> None:
    arn = iam.create_policy(PolicyName=unique("versioned"), PolicyDocument=KMS_READ)["Policy"]["Arn"]
    v2 = iam.create_policy_version(PolicyArn=arn, PolicyDocument=document(allow("kms:Decrypt")))[
        "PolicyVersion"
    ]
    assert v2["VersionId"] == "v2" and v2["IsDefaultVersion"] is False
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v1"
    v3 = iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=document(allow("kms:Encrypt")), SetAsDefault=True
    )["PolicyVersion"]
    assert v3["VersionId"] == "v3" and v3["IsDefaultVersion"] is True
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v3"
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=KMS_READ)
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=KMS_READ)
    with pytest.raises(ClientError) as excinfo:
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=KMS_READ)
    code, message, status = failure(excinfo)
    assert (code, status) == ("LimitExceeded", 409)
    assert message.startswith("A managed policy can have up to 5 versions.")

    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert [v["VersionId"] for v in versions] == ["v5", "v4", "v3", "v2", "v1"]
    assert [v["IsDefaultVersion"] for v in versions] == [False, False, True, False, False]

    with pytest.raises(ClientError) as excinfo:
        iam.delete_policy_version(PolicyArn=arn, VersionId="v3")
    assert failure(excinfo) == ("DeleteConflict", "Cannot delete the default version of a policy.", 409)
    iam.delete_policy_version(PolicyArn=arn, VersionId="v1")
    v6 = iam.create_policy_version(PolicyArn=arn, PolicyDocument=KMS_READ)["PolicyVersion"]
    assert v6["VersionId"] == "v6"  # version numbers are never reused

    iam.set_default_policy_version(PolicyArn=arn, VersionId="v2")
    assert iam.get_policy_version(PolicyArn=arn, VersionId="v2")["PolicyVersion"]["IsDefaultVersion"] is True
    with pytest.raises(ClientError) as excinfo:
        iam.set_default_policy_version(PolicyArn=arn, VersionId="v9")
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as excinfo:
        iam.get_policy_version(PolicyArn=arn, VersionId="v1")
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)

    with pytest.raises(ClientError) as excinfo:
        iam.delete_policy(PolicyArn=arn)
    assert failure(excinfo)[0::2] == ("DeleteConflict", 409)
    for version in ("v3", "v4", "v5", "v6"):
        iam.delete_policy_version(PolicyArn=arn, VersionId=version)
    iam.delete_policy(PolicyArn=arn)


def test_the_default_version_is_the_one_enforced(server: KhoaServer, iam: Any) -> None:
    arn = iam.create_policy(PolicyName=unique("switch"), PolicyDocument=document(allow("iam:ListRoles")))[
        "Policy"
    ]["Arn"]
    name, client = user_with_key(server, iam)
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    client.list_roles()
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=document(allow("iam:ListGroups")), SetAsDefault=True
    )
    client.list_groups()
    with pytest.raises(ClientError):
        client.list_roles()
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    client.list_roles()


def test_bad_policy_arns(iam: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        iam.get_policy(PolicyArn="arn:aws:s3:::bucket/not-a-policy")
    assert failure(excinfo) == ("InvalidInput", "ARN arn:aws:s3:::bucket/not-a-policy is not valid.", 400)
    other = "arn:aws:iam::999988887777:policy/theirs"
    with pytest.raises(ClientError) as excinfo:
        iam.get_policy(PolicyArn=other)
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)


# -- attachments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "param", "make"), KINDS)
def test_attach_and_detach(iam: Any, kind: str, param: str, make: Any) -> None:
    owner = make(iam)
    label = kind.capitalize()
    attach = getattr(iam, f"attach_{kind}_policy")
    detach = getattr(iam, f"detach_{kind}_policy")
    listing = getattr(iam, f"list_attached_{kind}_policies")
    name = unique("att")
    arn = iam.create_policy(PolicyName=name, Path="/team/", PolicyDocument=KMS_READ)["Policy"]["Arn"]
    attach(**{param: owner}, PolicyArn=arn)
    attach(**{param: owner}, PolicyArn=arn)  # idempotent
    assert listing(**{param: owner})["AttachedPolicies"] == [{"PolicyName": name, "PolicyArn": arn}]
    assert listing(**{param: owner}, PathPrefix="/other/")["AttachedPolicies"] == []
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1

    entities = iam.list_entities_for_policy(PolicyArn=arn)
    found = entities[f"Policy{label}s"]
    assert [e[f"{label}Name"] for e in found] == [owner]
    with pytest.raises(ClientError) as excinfo:
        iam.delete_policy(PolicyArn=arn)
    assert failure(excinfo) == ("DeleteConflict", "Cannot delete a policy attached to entities.", 409)

    detach(**{param: owner}, PolicyArn=arn)
    assert listing(**{param: owner})["AttachedPolicies"] == []
    with pytest.raises(ClientError) as excinfo:
        detach(**{param: owner}, PolicyArn=arn)
    assert failure(excinfo) == ("NoSuchEntity", f"Policy {arn} was not found.", 404)
    missing = f"arn:aws:iam::{ACCOUNT_ID}:policy/{unique('none')}"
    with pytest.raises(ClientError) as excinfo:
        attach(**{param: owner}, PolicyArn=missing)
    assert failure(excinfo) == ("NoSuchEntity", f"Policy {missing} does not exist or is not attachable.", 404)
    iam.delete_policy(PolicyArn=arn)


def test_at_most_ten_managed_policies_per_entity(iam: Any) -> None:
    user = _user(iam)
    for _ in range(10):
        arn = iam.create_policy(PolicyName=unique("ten"), PolicyDocument=KMS_READ)["Policy"]["Arn"]
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
    extra = iam.create_policy(PolicyName=unique("eleven"), PolicyDocument=KMS_READ)["Policy"]["Arn"]
    with pytest.raises(ClientError) as excinfo:
        iam.attach_user_policy(UserName=user, PolicyArn=extra)
    assert failure(excinfo) == ("LimitExceeded", "Cannot exceed quota for PoliciesPerUser: 10", 409)


def test_list_entities_for_policy_filters(iam: Any) -> None:
    arn = iam.create_policy(PolicyName=unique("shared"), PolicyDocument=KMS_READ)["Policy"]["Arn"]
    user, group, role = _user(iam), _group(iam), _role(iam)
    bounded = _user(iam)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    iam.attach_group_policy(GroupName=group, PolicyArn=arn)
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    iam.put_user_permissions_boundary(UserName=bounded, PermissionsBoundary=arn)
    everything = iam.list_entities_for_policy(PolicyArn=arn)
    assert sorted(u["UserName"] for u in everything["PolicyUsers"]) == sorted([user, bounded])
    assert [g["GroupName"] for g in everything["PolicyGroups"]] == [group]
    assert [r["RoleName"] for r in everything["PolicyRoles"]] == [role]
    only_roles = iam.list_entities_for_policy(PolicyArn=arn, EntityFilter="Role")
    assert only_roles["PolicyUsers"] == [] and len(only_roles["PolicyRoles"]) == 1
    attached = iam.list_entities_for_policy(PolicyArn=arn, PolicyUsageFilter="PermissionsPolicy")
    assert [u["UserName"] for u in attached["PolicyUsers"]] == [user]
    boundaries = iam.list_entities_for_policy(PolicyArn=arn, PolicyUsageFilter="PermissionsBoundary")
    assert [u["UserName"] for u in boundaries["PolicyUsers"]] == [bounded]
    assert boundaries["PolicyGroups"] == [] and boundaries["PolicyRoles"] == []


def test_list_policies_filters(iam: Any) -> None:
    path = f"/{unique('lp')}/"
    attached_name, idle_name = unique("attached"), unique("idle")
    attached = iam.create_policy(PolicyName=attached_name, Path=path, PolicyDocument=KMS_READ)["Policy"][
        "Arn"
    ]
    iam.create_policy(PolicyName=idle_name, Path=path, PolicyDocument=KMS_READ)
    iam.attach_role_policy(RoleName=_role(iam), PolicyArn=attached)
    local = iam.list_policies(Scope="Local", PathPrefix=path)["Policies"]
    assert sorted(p["PolicyName"] for p in local) == sorted([attached_name, idle_name])
    assert all("Description" not in p for p in local)
    only = iam.list_policies(Scope="Local", PathPrefix=path, OnlyAttached=True)["Policies"]
    assert [p["PolicyName"] for p in only] == [attached_name]
    assert only[0]["AttachmentCount"] == 1
    aws = iam.list_policies(Scope="AWS")["Policies"]
    assert "AdministratorAccess" in [p["PolicyName"] for p in aws]
    assert all(p["Arn"].startswith("arn:aws:iam::aws:policy/") for p in aws)
    paged = iam.get_paginator("list_policies").paginate(
        Scope="Local", PathPrefix=path, PaginationConfig={"PageSize": 1}
    )
    assert sorted(p["PolicyName"] for page in paged for p in page["Policies"]) == sorted(
        [attached_name, idle_name]
    )


def test_aws_managed_policies_can_be_attached(server: KhoaServer, iam: Any) -> None:
    admin = "arn:aws:iam::aws:policy/IAMReadOnlyAccess"
    policy = iam.get_policy(PolicyArn=admin)["Policy"]
    assert policy["PolicyName"] == "IAMReadOnlyAccess"
    assert iam.get_policy_version(PolicyArn=admin, VersionId=policy["DefaultVersionId"])["PolicyVersion"][
        "Document"
    ]
    name, client = user_with_key(server, iam)
    iam.attach_user_policy(UserName=name, PolicyArn=admin)
    client.list_users()
    with pytest.raises(ClientError):
        client.create_user(UserName=unique("nope"))
    with pytest.raises(ClientError) as excinfo:
        iam.create_policy_version(PolicyArn=admin, PolicyDocument=KMS_READ)
    assert failure(excinfo)[0] == "InvalidInput"
    with pytest.raises(ClientError) as excinfo:
        iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/NoSuchManagedPolicyHere")
    assert failure(excinfo)[0::2] == ("NoSuchEntity", 404)
    iam.detach_user_policy(UserName=name, PolicyArn=admin)


def test_explicit_deny_wins_over_attached_allows(server: KhoaServer, iam: Any) -> None:
    name, client = user_with_key(server, iam, policy=document(deny("iam:ListRoles")))
    iam.attach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    client.list_groups()
    with pytest.raises(ClientError) as excinfo:
        client.list_roles()
    code, message, _ = failure(excinfo)
    assert code == "AccessDenied" and "explicit deny" in message
