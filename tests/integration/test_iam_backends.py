"""The IAM write paths against SQLite and PostgreSQL, including concurrent requests for one name."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.iam import allow, document, trust
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KhoaServer]:
    url = "" if request.param == "sqlite" else str(request.getfixturevalue("private_postgres"))
    instance = KhoaServer(tmp_path / "data", database_url=url).start()
    yield instance
    instance.stop()


def _concurrently(count: int, call: Any) -> list[str]:
    """Run ``call`` from ``count`` threads at once; the error code of each (or "ok")."""
    barrier = threading.Barrier(count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            call()
            outcome = "ok"
        except ClientError as error:
            outcome = error.response["Error"]["Code"]
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_iam_scenario(backend_server: KhoaServer) -> None:
    iam = backend_server.client("iam")
    user, group, role = unique("u"), unique("g"), unique("r")
    iam.create_user(UserName=user, Tags=[{"Key": "a", "Value": "b"}])
    iam.create_group(GroupName=group)
    iam.add_user_to_group(GroupName=group, UserName=user)
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust({"AWS": ACCOUNT_ID}))
    arn = iam.create_policy(PolicyName=unique("p"), PolicyDocument=document(allow("iam:ListRoles")))[
        "Policy"
    ]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=document(allow("iam:List*")), SetAsDefault=True)
    for attach in (
        lambda: iam.attach_user_policy(UserName=user, PolicyArn=arn),
        lambda: iam.attach_group_policy(GroupName=group, PolicyArn=arn),
        lambda: iam.attach_role_policy(RoleName=role, PolicyArn=arn),
        lambda: iam.attach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess"),
    ):
        attach()
    iam.put_role_permissions_boundary(RoleName=role, PermissionsBoundary=arn)
    iam.put_group_policy(GroupName=group, PolicyName="g", PolicyDocument=document(allow("iam:GetGroup")))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    client = backend_server.client(
        "iam", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    client.list_roles()
    client.get_group(GroupName=group)
    details = iam.get_account_authorization_details()
    assert {u["UserName"] for u in details["UserDetailList"]} == {user}
    assert len(iam.list_entities_for_policy(PolicyArn=arn)["PolicyRoles"]) == 1

    iam.update_user(UserName=user, NewUserName=f"{user}-2")
    client.list_roles()  # the key follows the renamed user
    user = f"{user}-2"
    iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    iam.remove_user_from_group(GroupName=group, UserName=user)
    iam.detach_user_policy(UserName=user, PolicyArn=arn)
    iam.detach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/IAMReadOnlyAccess")
    iam.delete_user(UserName=user)
    iam.detach_group_policy(GroupName=group, PolicyArn=arn)
    iam.delete_group_policy(GroupName=group, PolicyName="g")
    iam.delete_group(GroupName=group)
    iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    iam.delete_role_permissions_boundary(RoleName=role)
    iam.delete_role(RoleName=role)
    iam.delete_policy_version(PolicyArn=arn, VersionId="v1")
    iam.delete_policy(PolicyArn=arn)
    assert iam.list_policies(Scope="Local")["Policies"] == []


def test_concurrent_requests_for_one_name(backend_server: KhoaServer) -> None:
    iam = backend_server.client("iam")
    name = unique("race")
    assert _concurrently(6, lambda: iam.create_user(UserName=name)) == ["EntityAlreadyExists"] * 5 + ["ok"]
    group = unique("race-group")
    iam.create_group(GroupName=group)
    assert _concurrently(6, lambda: iam.add_user_to_group(GroupName=group, UserName=name)) == ["ok"] * 6
    assert len(iam.get_group(GroupName=group)["Users"]) == 1
    arn = iam.create_policy(PolicyName=unique("race"), PolicyDocument=document(allow("kms:*")))["Policy"][
        "Arn"
    ]
    assert _concurrently(6, lambda: iam.attach_user_policy(UserName=name, PolicyArn=arn)) == ["ok"] * 6
    assert len(iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]) == 1
    keys = _concurrently(5, lambda: iam.create_access_key(UserName=name))
    assert keys == ["LimitExceeded"] * 3 + ["ok"] * 2
    assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 2
    managed = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert _concurrently(6, lambda: iam.get_policy(PolicyArn=managed)) == ["ok"] * 6
