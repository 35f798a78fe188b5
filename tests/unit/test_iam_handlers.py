"""IAM handlers called as the pipeline calls them, without a server: ``build_service(iam)`` over
collaborators built from a migrated SQLite database, a barrier, the production authoriser and a
credential store.

Authorisation is the pipeline's step (``service.authorizer``); the tests that need it run it
explicitly before the handler, as ``KhoaApp._prepare`` does.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, insert

from khoa.access.authorize import Authorizer
from khoa.access.directory import Directory
from khoa.auth.credentials import CredentialStore
from khoa.auth.principal import Principal
from khoa.protocol.errors import AWSError
from khoa.services.base import Service
from khoa.services.iam import build_service, simulate
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.store import IamStore
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.handlers import ACCOUNT, OTHER_ACCOUNT, barrier, context, database
from tests.support.interleave import before_first_write

ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
ACCOUNT_CREATED = 1700000000.0
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def allow(action: str, resource: str = "*") -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}
    )


class Env:
    """The IAM service over a fresh database. The directory caches callers' policies for a long time,
    so tests also show that every write empties that cache (build_service's wrapper)."""

    def __init__(self, path: Path | Engine) -> None:
        engine = path if isinstance(path, Engine) else create_database_engine(f"sqlite:///{path}")
        self.engine = engine
        seal = barrier()
        self.authorizer = Authorizer(Directory(engine, cache_seconds=300))
        self.backend = IamBackend(IamStore(engine), seal, self.authorizer, CredentialStore(engine, seal, 300))
        self.service: Service = build_service(self.backend)

    def call(self, operation: str, principal: Principal | None = None, **params: Any) -> dict[str, Any]:
        """Run ``operation``'s handler, by default as the account root of the test account."""
        return self.service.handlers[operation](context("iam", operation, principal=principal), params)

    def error(self, operation: str, principal: Principal | None = None, **params: Any) -> str:
        """The IAM error code ``operation`` answers with."""
        with pytest.raises(AWSError) as excinfo:
            self.call(operation, principal, **params)
        return excinfo.value.code

    def authorized_call(self, operation: str, principal: Principal, **params: Any) -> dict[str, Any]:
        """Authorise as the pipeline does, then run the handler with the same request context."""
        ctx = context("iam", operation, principal=principal)
        self.service.authorizer(ctx, params)
        return self.service.handlers[operation](ctx, params)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database for the module; each test works on a copy (migrating is the slow part)."""
    directory = tmp_path_factory.mktemp("iam-template")
    engine = database(directory)
    with engine.begin() as conn:  # access keys belong to an account that exists
        conn.execute(
            insert(schema.accounts).values(account_id=ACCOUNT, name="test", created_at=ACCOUNT_CREATED)
        )
    engine.dispose()
    return directory / "khoa.db"


@pytest.fixture
def iam(migrated: Path, tmp_path: Path) -> Env:
    shutil.copyfile(migrated, tmp_path / "khoa.db")
    return Env(tmp_path / "khoa.db")


def as_user(env: Env, name: str) -> Principal:
    """A request principal for the IAM user ``name`` (which must exist)."""
    user = env.call("GetUser", UserName=name)["User"]
    return Principal(
        account_id=ACCOUNT,
        arn=user["Arn"],
        user_id=user["UserId"],
        kind="IAMUser",
        name=name,
        principal_id=user["UserId"],
    )


# -- users -----------------------------------------------------------------------------------------------


def test_create_get_and_list_users(iam: Env) -> None:
    created = iam.call("CreateUser", UserName="alice", Path="/team/", Tags=[{"Key": "Dept", "Value": "eng"}])[
        "User"
    ]
    assert created["UserId"].startswith("AIDA")
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/alice"
    assert created["Tags"] == [{"Key": "Dept", "Value": "eng"}]
    assert created["PermissionsBoundary"] is None
    iam.call("CreateUser", UserName="bob")
    got = iam.call("GetUser", UserName="ALICE")["User"]  # names are case-insensitive
    assert (got["UserName"], got["UserId"], got["Tags"]) == ("alice", created["UserId"], created["Tags"])
    assert [u["UserName"] for u in iam.call("ListUsers")["Users"]] == ["alice", "bob"]
    assert [u["UserName"] for u in iam.call("ListUsers", PathPrefix="/team/")["Users"]] == ["alice"]


def test_user_errors(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    assert iam.error("CreateUser", UserName="Alice") == "EntityAlreadyExists"
    assert iam.error("GetUser", UserName="nobody") == "NoSuchEntity"
    assert iam.error("DeleteUser", UserName="nobody") == "NoSuchEntity"
    assert iam.error("CreateUser", UserName="carol", PermissionsBoundary=ADMIN + "X") == "NoSuchEntity"
    duplicate = [{"Key": "a", "Value": "1"}, {"Key": "A", "Value": "2"}]
    assert iam.error("CreateUser", UserName="dave", Tags=duplicate) == "InvalidInput"
    assert iam.error("GetUser", UserName="dave") == "NoSuchEntity"  # nothing was stored


def test_get_user_without_a_name_is_the_caller(iam: Env) -> None:
    root = iam.call("GetUser")["User"]
    assert root == {"UserId": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root", "CreateDate": ACCOUNT_CREATED}
    iam.call("CreateUser", UserName="alice")
    assert iam.call("GetUser", as_user(iam, "alice"))["User"]["UserName"] == "alice"


def test_rename_user_takes_its_access_keys_along(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    key = iam.call("CreateAccessKey", UserName="alice")["AccessKey"]
    iam.call("UpdateUser", UserName="alice", NewUserName="alicia", NewPath="/x/")
    assert iam.error("GetUser", UserName="alice") == "NoSuchEntity"
    assert iam.call("GetUser", UserName="alicia")["User"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/x/alicia"
    listed = iam.call("ListAccessKeys", UserName="alicia")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key["AccessKeyId"]]
    iam.call("CreateUser", UserName="bob")
    assert iam.error("UpdateUser", UserName="bob", NewUserName="ALICIA") == "EntityAlreadyExists"


def test_delete_user_refuses_while_something_refers_to_it(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    key = iam.call("CreateAccessKey", UserName="alice")["AccessKey"]["AccessKeyId"]
    assert iam.error("DeleteUser", UserName="alice") == "DeleteConflict"
    iam.call("DeleteAccessKey", UserName="alice", AccessKeyId=key)
    iam.call("PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=allow("s3:GetObject"))
    assert iam.error("DeleteUser", UserName="alice") == "DeleteConflict"
    iam.call("DeleteUserPolicy", UserName="alice", PolicyName="p")
    iam.call("CreateGroup", GroupName="devs")
    iam.call("AddUserToGroup", GroupName="devs", UserName="alice")
    assert iam.error("DeleteUser", UserName="alice") == "DeleteConflict"
    iam.call("RemoveUserFromGroup", GroupName="devs", UserName="alice")
    iam.call("DeleteUser", UserName="alice")
    assert iam.call("ListUsers")["Users"] == []


def test_list_users_pages(iam: Env) -> None:
    for name in ("a", "b", "c"):
        iam.call("CreateUser", UserName=name)
    first = iam.call("ListUsers", MaxItems=2)
    assert [u["UserName"] for u in first["Users"]] == ["a", "b"] and first["IsTruncated"]
    second = iam.call("ListUsers", MaxItems=2, Marker=first["Marker"])
    assert [u["UserName"] for u in second["Users"]] == ["c"] and not second["IsTruncated"]
    assert iam.error("ListUsers", Marker="not-a-marker") == "ValidationError"


# -- groups ----------------------------------------------------------------------------------------------


def test_group_membership(iam: Env) -> None:
    group = iam.call("CreateGroup", GroupName="devs", Path="/eng/")["Group"]
    assert group["GroupId"].startswith("AGPA") and group["Arn"].endswith(":group/eng/devs")
    iam.call("CreateUser", UserName="alice")
    iam.call("AddUserToGroup", GroupName="devs", UserName="alice")
    iam.call("AddUserToGroup", GroupName="devs", UserName="alice")  # adding twice is not an error
    assert [u["UserName"] for u in iam.call("GetGroup", GroupName="devs")["Users"]] == ["alice"]
    assert [g["GroupName"] for g in iam.call("ListGroupsForUser", UserName="alice")["Groups"]] == ["devs"]
    assert iam.error("DeleteGroup", GroupName="devs") == "DeleteConflict"
    assert iam.error("AddUserToGroup", GroupName="devs", UserName="nobody") == "NoSuchEntity"
    iam.call("RemoveUserFromGroup", GroupName="devs", UserName="alice")
    assert iam.error("RemoveUserFromGroup", GroupName="devs", UserName="alice") == "NoSuchEntity"
    iam.call("UpdateGroup", GroupName="devs", NewGroupName="developers")
    assert [g["GroupName"] for g in iam.call("ListGroups")["Groups"]] == ["developers"]
    iam.call("DeleteGroup", GroupName="developers")
    assert iam.error("GetGroup", GroupName="developers") == "NoSuchEntity"


def test_a_user_is_in_at_most_ten_groups(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    for i in range(10):
        iam.call("CreateGroup", GroupName=f"g{i}")
        iam.call("AddUserToGroup", GroupName=f"g{i}", UserName="alice")
    iam.call("CreateGroup", GroupName="g10")
    assert iam.error("AddUserToGroup", GroupName="g10", UserName="alice") == "LimitExceeded"
    assert len(iam.call("ListGroupsForUser", UserName="alice")["Groups"]) == 10


# -- roles -----------------------------------------------------------------------------------------------


def test_create_get_update_and_delete_a_role(iam: Env) -> None:
    role = iam.call("CreateRole", RoleName="app", AssumeRolePolicyDocument=TRUST, Description="d")["Role"]
    assert role["RoleId"].startswith("AROA") and "RoleLastUsed" not in role
    assert role["MaxSessionDuration"] == 3600
    got = iam.call("GetRole", RoleName="app")["Role"]
    assert got["RoleLastUsed"] == {} and got["Description"] == "d"
    assert json.loads(unquote(got["AssumeRolePolicyDocument"])) == json.loads(TRUST)
    updated = iam.call("UpdateRoleDescription", RoleName="app", Description="new")["Role"]
    assert updated["Description"] == "new"
    iam.call("UpdateRole", RoleName="app", MaxSessionDuration=7200)
    assert iam.call("GetRole", RoleName="app")["Role"]["MaxSessionDuration"] == 7200
    iam.call("AttachRolePolicy", RoleName="app", PolicyArn=ADMIN)
    assert iam.error("DeleteRole", RoleName="app") == "DeleteConflict"
    iam.call("DetachRolePolicy", RoleName="app", PolicyArn=ADMIN)
    iam.call("DeleteRole", RoleName="app")
    assert iam.error("GetRole", RoleName="app") == "NoSuchEntity"


def test_role_trust_policies_are_validated(iam: Env) -> None:
    with_resource = json.loads(TRUST)
    with_resource["Statement"][0]["Resource"] = "*"
    assert iam.error("CreateRole", RoleName="r", AssumeRolePolicyDocument=json.dumps(with_resource)) == (
        "MalformedPolicyDocument"
    )
    not_sts = TRUST.replace("sts:AssumeRole", "s3:GetObject")
    assert (
        iam.error("CreateRole", RoleName="r", AssumeRolePolicyDocument=not_sts) == "MalformedPolicyDocument"
    )
    iam.call("CreateRole", RoleName="r", AssumeRolePolicyDocument=TRUST)
    assert iam.error("CreateRole", RoleName="R", AssumeRolePolicyDocument=TRUST) == "EntityAlreadyExists"
    assert iam.error("UpdateAssumeRolePolicy", RoleName="r", PolicyDocument="{") == "MalformedPolicyDocument"


# -- managed policies, versions and attachments ----------------------------------------------------------


def test_create_attach_and_delete_a_managed_policy(iam: Env) -> None:
    policy = iam.call("CreatePolicy", PolicyName="read", PolicyDocument=allow("s3:GetObject"))["Policy"]
    arn = policy["Arn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/read" and policy["PolicyId"].startswith("ANPA")
    assert (policy["DefaultVersionId"], policy["AttachmentCount"]) == ("v1", 0)
    iam.call("CreateUser", UserName="alice")
    iam.call("AttachUserPolicy", UserName="alice", PolicyArn=arn)
    attached = iam.call("ListAttachedUserPolicies", UserName="alice")["AttachedPolicies"]
    assert attached == [{"PolicyName": "read", "PolicyArn": arn}]
    assert iam.call("GetPolicy", PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    users = iam.call("ListEntitiesForPolicy", PolicyArn=arn)["PolicyUsers"]
    assert [u["UserName"] for u in users] == ["alice"]
    assert iam.error("DeletePolicy", PolicyArn=arn) == "DeleteConflict"
    iam.call("DetachUserPolicy", UserName="alice", PolicyArn=arn)
    assert iam.error("DetachUserPolicy", UserName="alice", PolicyArn=arn) == "NoSuchEntity"
    iam.call("DeletePolicy", PolicyArn=arn)
    assert iam.error("GetPolicy", PolicyArn=arn) == "NoSuchEntity"


def test_a_policy_deleted_while_it_is_attached_or_made_a_boundary_is_never_left_in_use(
    store_engine: Engine,
) -> None:
    """DeletePolicy committed between an attachment's checks and its write: the attachment is refused
    (it would outlive the policy, and a policy created again under the same name would apply to the
    user unasked); committed the other way round, the deletion counts the use and refuses. On SQLite
    and PostgreSQL."""
    iam = Env(store_engine)
    iam.call("CreateUser", UserName="alice")
    iam.call("CreateRole", RoleName="ops", AssumeRolePolicyDocument=TRUST)

    def policy(name: str) -> str:
        made = iam.call("CreatePolicy", PolicyName=name, PolicyDocument=allow("s3:GetObject"))
        return str(made["Policy"]["Arn"])

    def delete(arn: str) -> Callable[[], dict[str, Any]]:
        return lambda: iam.call("DeletePolicy", PolicyArn=arn)

    uses: list[tuple[str, dict[str, Any]]] = [
        ("AttachUserPolicy", {"UserName": "alice"}),
        ("AttachRolePolicy", {"RoleName": "ops"}),
        ("PutUserPermissionsBoundary", {"UserName": "alice"}),
        ("PutRolePermissionsBoundary", {"RoleName": "ops"}),
        ("CreateUser", {"UserName": "bob"}),
    ]
    for operation, params in uses:
        arn = policy(f"gone-{operation}")
        field = "PermissionsBoundary" if "Boundary" in operation or operation == "CreateUser" else "PolicyArn"
        with before_first_write(iam.engine, delete(arn)) as inner:
            assert iam.error(operation, **params, **{field: arn}) == "NoSuchEntity", operation
        assert inner == [{}]  # the deletion went through; the use did not
        assert iam.error("GetPolicy", PolicyArn=arn) == "NoSuchEntity"
        assert iam.call("ListEntitiesForPolicy", PolicyArn=ADMIN)["PolicyUsers"] == []
        # The other order: the use commits first, the deletion that started earlier is refused.
        arn = policy(f"kept-{operation}")
        with before_first_write(iam.engine, lambda: iam.call(operation, **params, **{field: arn})) as inner:
            assert _fails(delete(arn)) == "DeleteConflict", operation
        assert inner == [{}] or "User" in inner[0], inner
    attached = iam.call("ListAttachedUserPolicies", UserName="alice")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["kept-AttachUserPolicy"]
    assert iam.call("GetUser", UserName="bob")["User"]["PermissionsBoundary"][
        "PermissionsBoundaryArn"
    ].endswith("kept-CreateUser")


def test_policy_errors(iam: Env) -> None:
    iam.call("CreatePolicy", PolicyName="p", PolicyDocument=allow("s3:GetObject"))
    assert (
        iam.error("CreatePolicy", PolicyName="P", PolicyDocument=allow("s3:GetObject"))
        == "EntityAlreadyExists"
    )
    assert iam.error("CreatePolicy", PolicyName="q", PolicyDocument="not json") == "MalformedPolicyDocument"
    assert iam.error("GetPolicy", PolicyArn="arn:aws:iam::nope") == "InvalidInput"
    # Another account's policy is never looked up: the answer is that it does not exist.
    other = f"arn:aws:iam::{OTHER_ACCOUNT}:policy/p"
    assert iam.error("GetPolicy", PolicyArn=other) == "NoSuchEntity"
    iam.call("CreateUser", UserName="alice")
    assert iam.error("AttachUserPolicy", UserName="alice", PolicyArn=other) == "NoSuchEntity"
    assert iam.error("DeletePolicy", PolicyArn=ADMIN) == "InvalidInput"  # AWS-managed: not yours


def test_policy_versions(iam: Env) -> None:
    arn = iam.call("CreatePolicy", PolicyName="p", PolicyDocument=allow("s3:GetObject"))["Policy"]["Arn"]
    v2 = iam.call("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:*"), SetAsDefault=True)
    assert (v2["PolicyVersion"]["VersionId"], v2["PolicyVersion"]["IsDefaultVersion"]) == ("v2", True)
    for _ in range(3):
        iam.call("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:PutObject"))
    assert iam.error("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:x")) == "LimitExceeded"
    versions = iam.call("ListPolicyVersions", PolicyArn=arn)["Versions"]
    assert [v["VersionId"] for v in versions] == ["v5", "v4", "v3", "v2", "v1"]
    assert [v["IsDefaultVersion"] for v in versions] == [False, False, False, True, False]
    assert iam.error("DeletePolicyVersion", PolicyArn=arn, VersionId="v2") == "DeleteConflict"
    assert iam.error("GetPolicyVersion", PolicyArn=arn, VersionId="v9") == "NoSuchEntity"
    iam.call("SetDefaultPolicyVersion", PolicyArn=arn, VersionId="v5")
    iam.call("DeletePolicyVersion", PolicyArn=arn, VersionId="v2")
    assert iam.call("GetPolicy", PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v5"
    assert iam.error("DeletePolicy", PolicyArn=arn) == "DeleteConflict"  # versions left


def _versions(iam: Env, arn: str) -> tuple[str, list[str]]:
    """A policy's default version and its versions, and that the default is one of them."""
    default = iam.call("GetPolicy", PolicyArn=arn)["Policy"]["DefaultVersionId"]
    versions = sorted(v["VersionId"] for v in iam.call("ListPolicyVersions", PolicyArn=arn)["Versions"])
    assert default in versions
    return default, versions


def _fails(call: Any) -> str:
    with pytest.raises(AWSError) as excinfo:
        call()
    return excinfo.value.code


# Each change to a policy's versions reads the policy under its lock (finding 8). The tests below run
# one change inside another, just before the other's first write (tests.support.interleave), on SQLite
# and PostgreSQL: the interleaving in which, without that lock, CreatePolicyVersion failed on the
# version ID it had read (500), SetDefaultPolicyVersion and DeletePolicyVersion of one version both
# succeeded (a default version that does not exist), and DeletePolicy deleted a policy of two versions.


@pytest.fixture
def versioned(store_engine: Engine) -> tuple[Env, str]:
    """The IAM service on SQLite or PostgreSQL, and a customer-managed policy of one version."""
    iam = Env(store_engine)
    return iam, iam.call("CreatePolicy", PolicyName="p", PolicyDocument=allow("s3:GetObject"))["Policy"][
        "Arn"
    ]


def test_concurrent_create_policy_versions_number_and_count_each_other(versioned: tuple[Env, str]) -> None:
    iam, arn = versioned

    def create() -> str:
        made = iam.call("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:ListBucket"))
        return str(made["PolicyVersion"]["VersionId"])

    with before_first_write(iam.engine, create) as inner:
        outer = create()
    assert (inner, outer) == (["v2"], "v3")
    create()  # v4
    with before_first_write(iam.engine, create) as inner:  # at four versions, only one more fits
        assert _fails(create) == "LimitExceeded"
    assert inner == ["v5"] and _versions(iam, arn) == ("v1", ["v1", "v2", "v3", "v4", "v5"])


def test_set_default_and_delete_of_one_version_never_leave_a_missing_default(
    versioned: tuple[Env, str],
) -> None:
    iam, arn = versioned
    for _ in range(2):
        iam.call("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:ListBucket"))

    def call(operation: str, version_id: str) -> Callable[[], dict[str, Any]]:
        return lambda: iam.call(operation, PolicyArn=arn, VersionId=version_id)

    # SetDefaultPolicyVersion(v3) with DeletePolicyVersion(v3) committed meanwhile: v3 is gone.
    with before_first_write(iam.engine, call("DeletePolicyVersion", "v3")) as inner:
        assert _fails(call("SetDefaultPolicyVersion", "v3")) == "NoSuchEntity"
    assert inner == [{}] and _versions(iam, arn) == ("v1", ["v1", "v2"])
    # DeletePolicyVersion(v2) with SetDefaultPolicyVersion(v2) committed meanwhile: v2 is the default.
    with before_first_write(iam.engine, call("SetDefaultPolicyVersion", "v2")) as inner:
        assert _fails(call("DeletePolicyVersion", "v2")) == "DeleteConflict"
    assert inner == [{}] and _versions(iam, arn) == ("v2", ["v1", "v2"])


def test_delete_policy_counts_a_version_created_meanwhile(versioned: tuple[Env, str]) -> None:
    iam, arn = versioned

    def add_version() -> dict[str, Any]:
        return iam.call("CreatePolicyVersion", PolicyArn=arn, PolicyDocument=allow("s3:*"))

    with before_first_write(iam.engine, add_version) as inner:
        assert _fails(lambda: iam.call("DeletePolicy", PolicyArn=arn)) == "DeleteConflict"
    assert len(inner) == 1 and _versions(iam, arn) == ("v1", ["v1", "v2"])


def test_aws_managed_policies_are_listed_and_attachable(iam: Env) -> None:
    names = {p["PolicyName"] for p in iam.call("ListPolicies", Scope="AWS")["Policies"]}
    assert {"AdministratorAccess", "ReadOnlyAccess"} <= names
    assert iam.call("ListPolicies", Scope="Local")["Policies"] == []
    iam.call("CreateGroup", GroupName="admins")
    iam.call("AttachGroupPolicy", GroupName="admins", PolicyArn=ADMIN)
    assert iam.call("ListPolicies", OnlyAttached=True)["Policies"][0]["Arn"] == ADMIN
    unknown = "arn:aws:iam::aws:policy/NoSuchPolicy"
    assert iam.error("AttachGroupPolicy", GroupName="admins", PolicyArn=unknown) == "NoSuchEntity"


def test_at_most_ten_attached_policies(iam: Env) -> None:
    iam.call("CreateRole", RoleName="r", AssumeRolePolicyDocument=TRUST)
    for i in range(11):
        arn = iam.call("CreatePolicy", PolicyName=f"p{i}", PolicyDocument=allow("s3:GetObject"))["Policy"][
            "Arn"
        ]
        if i < 10:
            iam.call("AttachRolePolicy", RoleName="r", PolicyArn=arn)
    assert iam.error("AttachRolePolicy", RoleName="r", PolicyArn=arn) == "LimitExceeded"
    assert len(iam.call("ListAttachedRolePolicies", RoleName="r")["AttachedPolicies"]) == 10


def test_permissions_boundaries(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    iam.call("PutUserPermissionsBoundary", UserName="alice", PermissionsBoundary=ADMIN)
    assert (
        iam.call("GetUser", UserName="alice")["User"]["PermissionsBoundary"]["PermissionsBoundaryArn"]
        == ADMIN
    )
    assert iam.call("GetPolicy", PolicyArn=ADMIN)["Policy"]["PermissionsBoundaryUsageCount"] == 1
    iam.call("DeleteUserPermissionsBoundary", UserName="alice")
    assert iam.call("GetUser", UserName="alice")["User"]["PermissionsBoundary"] is None
    missing = f"arn:aws:iam::{ACCOUNT}:policy/none"
    assert (
        iam.error("PutUserPermissionsBoundary", UserName="alice", PermissionsBoundary=missing)
        == "NoSuchEntity"
    )


# -- inline policies -------------------------------------------------------------------------------------


def test_inline_policies(iam: Env) -> None:
    iam.call("CreateGroup", GroupName="devs")
    document = allow("s3:GetObject")
    iam.call("PutGroupPolicy", GroupName="devs", PolicyName="read", PolicyDocument=document)
    got = iam.call("GetGroupPolicy", GroupName="devs", PolicyName="read")
    assert got["GroupName"] == "devs" and "%22" in got["PolicyDocument"]  # URL-encoded, as AWS returns it
    assert iam.call("ListGroupPolicies", GroupName="devs")["PolicyNames"] == ["read"]
    assert iam.error("GetGroupPolicy", GroupName="devs", PolicyName="nope") == "NoSuchEntity"
    assert iam.error("PutGroupPolicy", GroupName="devs", PolicyName="x", PolicyDocument="{}") == (
        "MalformedPolicyDocument"
    )
    iam.call("DeleteGroupPolicy", GroupName="devs", PolicyName="read")
    assert iam.error("DeleteGroupPolicy", GroupName="devs", PolicyName="read") == "NoSuchEntity"


def test_inline_policies_have_a_combined_size_limit(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    big = allow("s3:" + "A" * 1900)
    iam.call("PutUserPolicy", UserName="alice", PolicyName="one", PolicyDocument=big)
    iam.call("PutUserPolicy", UserName="alice", PolicyName="one", PolicyDocument=big)  # replacing fits
    assert (
        iam.error("PutUserPolicy", UserName="alice", PolicyName="two", PolicyDocument=big) == "LimitExceeded"
    )


# -- access keys -----------------------------------------------------------------------------------------


def test_access_keys(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    first = iam.call("CreateAccessKey", UserName="alice")["AccessKey"]
    assert first["AccessKeyId"].startswith("AKIA") and len(first["SecretAccessKey"]) == 40
    iam.call("CreateAccessKey", UserName="alice")
    assert iam.error("CreateAccessKey", UserName="alice") == "LimitExceeded"
    listed = iam.call("ListAccessKeys", UserName="alice")["AccessKeyMetadata"]
    assert len(listed) == 2 and "SecretAccessKey" not in listed[0]
    key = first["AccessKeyId"]
    assert iam.error("UpdateAccessKey", UserName="alice", AccessKeyId=key, Status="Paused") == "InvalidInput"
    iam.call("UpdateAccessKey", UserName="alice", AccessKeyId=key, Status="Inactive")
    statuses = {
        k["AccessKeyId"]: k["Status"]
        for k in iam.call("ListAccessKeys", UserName="alice")["AccessKeyMetadata"]
    }
    assert statuses[key] == "Inactive"
    last = iam.call("GetAccessKeyLastUsed", AccessKeyId=key)
    assert last == {"UserName": "alice", "AccessKeyLastUsed": {"ServiceName": "N/A", "Region": "N/A"}}
    iam.call("DeleteAccessKey", UserName="alice", AccessKeyId=key)
    assert iam.error("DeleteAccessKey", UserName="alice", AccessKeyId=key) == "NoSuchEntity"
    assert iam.error("GetAccessKeyLastUsed", AccessKeyId=key) == "NoSuchEntity"


def test_the_root_manages_its_own_keys_without_a_user_name(iam: Env) -> None:
    key = iam.call("CreateAccessKey")["AccessKey"]
    assert key["UserName"] is None
    assert [k["AccessKeyId"] for k in iam.call("ListAccessKeys")["AccessKeyMetadata"]] == [key["AccessKeyId"]]
    assert iam.call("GetAccessKeyLastUsed", AccessKeyId=key["AccessKeyId"])["UserName"] is None


def test_a_new_access_key_is_known_to_the_credential_store(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    key = iam.call("CreateAccessKey", UserName="alice")["AccessKey"]
    credential = iam.backend.credentials.lookup(key["AccessKeyId"])
    assert credential is not None and credential.principal.name == "alice"


# -- tags ------------------------------------------------------------------------------------------------


def test_tags(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    iam.call("TagUser", UserName="alice", Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}])
    iam.call("TagUser", UserName="alice", Tags=[{"Key": "A", "Value": "one"}])  # keys are case-insensitive
    assert iam.call("ListUserTags", UserName="alice")["Tags"] == [
        {"Key": "A", "Value": "one"},
        {"Key": "b", "Value": "2"},
    ]
    iam.call("UntagUser", UserName="alice", TagKeys=["B"])
    assert iam.call("ListUserTags", UserName="alice")["Tags"] == [{"Key": "A", "Value": "one"}]
    assert iam.error("TagUser", UserName="alice", Tags=[{"Key": "aws:x", "Value": "1"}]) == "InvalidInput"
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert iam.error("TagUser", UserName="alice", Tags=too_many) == "LimitExceeded"
    assert len(iam.call("ListUserTags", UserName="alice")["Tags"]) == 1  # rolled back
    assert iam.error("TagPolicy", PolicyArn=ADMIN, Tags=[{"Key": "a", "Value": "1"}]) == "NoSuchEntity"


# -- whole-account reads, simulation, authorisation ------------------------------------------------------


def test_account_authorization_details(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    iam.call("CreateGroup", GroupName="devs")
    iam.call("AddUserToGroup", GroupName="devs", UserName="alice")
    iam.call("PutUserPolicy", UserName="alice", PolicyName="inline", PolicyDocument=allow("s3:GetObject"))
    iam.call("AttachUserPolicy", UserName="alice", PolicyArn=ADMIN)
    details = iam.call("GetAccountAuthorizationDetails")
    (user,) = details["UserDetailList"]
    assert user["GroupList"] == ["devs"]
    assert [p["PolicyName"] for p in user["UserPolicyList"]] == ["inline"]
    assert user["AttachedManagedPolicies"] == [{"PolicyName": "AdministratorAccess", "PolicyArn": ADMIN}]
    assert [g["GroupName"] for g in details["GroupDetailList"]] == ["devs"]
    assert [p["Arn"] for p in details["Policies"]] == [ADMIN]  # AWS-managed ones appear once used
    only_groups = iam.call("GetAccountAuthorizationDetails", Filter=["Group"])
    assert only_groups["UserDetailList"] == [] and len(only_groups["GroupDetailList"]) == 1


def test_simulate_principal_policy(iam: Env) -> None:
    iam.call("CreateUser", UserName="alice")
    iam.call("CreateGroup", GroupName="devs")
    iam.call("AddUserToGroup", GroupName="devs", UserName="alice")
    iam.call("PutGroupPolicy", GroupName="devs", PolicyName="read", PolicyDocument=allow("s3:GetObject"))
    arn = iam.call("GetUser", UserName="alice")["User"]["Arn"]
    results = iam.call(
        "SimulatePrincipalPolicy", PolicySourceArn=arn, ActionNames=["s3:GetObject", "s3:PutObject"]
    )["EvaluationResults"]
    assert [r["EvalDecision"] for r in results] == ["allowed", "implicitDeny"]
    assert results[0]["MatchedStatements"] == [{"SourcePolicyId": "read", "SourcePolicyType": "group"}]
    missing = f"arn:aws:iam::{ACCOUNT}:user/nobody"
    assert (
        iam.error("SimulatePrincipalPolicy", PolicySourceArn=missing, ActionNames=["s3:x"]) == "NoSuchEntity"
    )
    assert (
        iam.error("SimulatePrincipalPolicy", PolicySourceArn="arn:x", ActionNames=["s3:x"]) == "InvalidInput"
    )


KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/"


def _custom(actions: int, resources: int, **params: Any) -> dict[str, Any]:
    """SimulateCustomPolicy parameters: ``actions`` x ``resources`` pairs, kms:A1 on key/k2 allowed."""
    return {
        "PolicyInputList": [allow("kms:A1", KMS_KEY + "k2")],
        "ActionNames": [f"kms:A{i}" for i in range(actions)],
        "ResourceArns": [f"{KMS_KEY}k{i}" for i in range(resources)],
        **params,
    }


def _pairs(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (r["EvalActionName"], r["EvalResourceName"].removeprefix(KMS_KEY), r["EvalDecision"]) for r in results
    ]


def _every_page(iam: Env, params: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    page = iam.call("SimulateCustomPolicy", **params)
    results += page["EvaluationResults"]
    while page["IsTruncated"]:
        assert page["EvaluationResults"], "a page that is not the last has a result at least"
        page = iam.call("SimulateCustomPolicy", **params, Marker=page["Marker"])
        results += page["EvaluationResults"]
    assert "Marker" not in page
    return results


def test_a_simulation_evaluates_its_page_and_no_more(iam: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair is evaluated from its position when its page is asked for: 90,000 pairs and
    MaxItems=2 cost two evaluations (the whole product was evaluated, and kept, before paging)."""
    evaluations = []
    real = simulate.evaluate

    def counted(*args: Any, **kwargs: Any) -> Any:
        evaluations.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate, "evaluate", counted)
    first = iam.call("SimulateCustomPolicy", **_custom(300, 300, MaxItems=2))
    assert len(evaluations) == 2
    assert _pairs(first["EvaluationResults"]) == [
        ("kms:A0", "k0", "implicitDeny"),
        ("kms:A0", "k1", "implicitDeny"),
    ]
    assert first["IsTruncated"] is True
    last = iam.call("SimulateCustomPolicy", **_custom(300, 300, MaxItems=5, Marker=first["Marker"]))
    assert len(evaluations) == 7
    assert _pairs(last["EvaluationResults"])[:2] == [
        ("kms:A0", "k2", "implicitDeny"),
        ("kms:A0", "k3", "implicitDeny"),
    ]
    # Pages in turn are the whole answer, in order: actions outer, resources inner.
    whole = iam.call("SimulateCustomPolicy", **_custom(4, 3, MaxItems=1000))
    assert whole["IsTruncated"] is False and "Marker" not in whole
    assert _pairs(whole["EvaluationResults"]) == [
        (f"kms:A{a}", f"k{r}", "allowed" if (a, r) == (1, 2) else "implicitDeny")
        for a in range(4)
        for r in range(3)
    ]
    assert _every_page(iam, _custom(4, 3, MaxItems=5)) == whole["EvaluationResults"]
    assert (
        len(iam.call("SimulateCustomPolicy", **_custom(30, 10))["EvaluationResults"]) == 100
    )  # AWS's default


def test_a_simulation_page_ends_when_its_time_is_up(iam: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that has taken PAGE_SECONDS ends there, truncated (after one result, so paging moves on)."""
    monkeypatch.setattr(simulate, "PAGE_SECONDS", 0.0)
    page = iam.call("SimulateCustomPolicy", **_custom(4, 3, MaxItems=1000))
    assert len(page["EvaluationResults"]) == 1 and page["IsTruncated"] is True
    monkeypatch.undo()
    whole = iam.call("SimulateCustomPolicy", **_custom(4, 3, MaxItems=1000))["EvaluationResults"]
    monkeypatch.setattr(simulate, "PAGE_SECONDS", 0.0)
    assert _every_page(iam, _custom(4, 3, MaxItems=1000)) == whole


def test_a_simulation_of_more_pairs_than_the_bound_is_refused(
    iam: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulate, "MAX_SIMULATIONS", 12)
    assert len(iam.call("SimulateCustomPolicy", **_custom(4, 3, MaxItems=1000))["EvaluationResults"]) == 12
    with pytest.raises(AWSError) as excinfo:
        iam.call("SimulateCustomPolicy", **_custom(13, 1))
    assert (excinfo.value.code, excinfo.value.status) == ("InvalidInput", 400)
    assert "13 combinations of ActionNames and ResourceArns (13 x 1)" in str(excinfo.value.message)
    arn = iam.call("CreateUser", UserName="bounded")["User"]["Arn"]
    params = {"PolicySourceArn": arn, "ActionNames": ["kms:A"] * 5, "ResourceArns": ["*"] * 3}
    assert iam.error("SimulatePrincipalPolicy", **params) == "InvalidInput"


def _marker(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_marker_is_checked_as_the_callers_input(iam: Env) -> None:
    """Only a marker Khoa could have issued for this simulation is read: "khoa-iam:" and ASCII digits
    (str.isdigit also takes "²", which int() refuses: a 500), below the number of pairs."""
    for marker in (
        "not-a-marker",
        _marker("khoa-iam:\xb2"),
        _marker("khoa-iam:\u0663"),
        _marker("khoa-iam:"),
        _marker("khoa-iam:-1"),
        _marker("khoa-iam:12"),  # 4 x 3 pairs: 11 is the last
        _marker("khoa-iam:" + "9" * 20),
        _marker("other:1"),
    ):
        assert iam.error("SimulateCustomPolicy", **_custom(4, 3, Marker=marker)) == "ValidationError", marker
    assert _pairs(
        iam.call("SimulateCustomPolicy", **_custom(4, 3, Marker=_marker("khoa-iam:11")))["EvaluationResults"]
    ) == [("kms:A3", "k2", "implicitDeny")]
    # The other lists read markers alike.
    assert iam.error("ListUsers", Marker=_marker("khoa-iam:\xb2")) == "ValidationError"


def test_writes_take_effect_on_authorisation_at_once(iam: Env) -> None:
    """The directory caches policies for minutes; every IAM write empties it, so attaching a policy
    lets the user act on the very next request."""
    iam.call("CreateUser", UserName="alice")
    alice = as_user(iam, "alice")
    with pytest.raises(AWSError) as excinfo:
        iam.authorized_call("CreateUser", alice, UserName="bob")
    assert (excinfo.value.code, excinfo.value.status) == ("AccessDenied", 403)
    iam.call("AttachUserPolicy", UserName="alice", PolicyArn=ADMIN)
    assert iam.authorized_call("CreateUser", alice, UserName="bob")["User"]["UserName"] == "bob"
    iam.call("DetachUserPolicy", UserName="alice", PolicyArn=ADMIN)
    with pytest.raises(AWSError):
        iam.authorized_call("DeleteUser", alice, UserName="bob")
