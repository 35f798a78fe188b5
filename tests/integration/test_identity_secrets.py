"""Secrets Manager resource policies and condition keys, within an account and across accounts.

The cross-account scenario is the one platform teams rely on: a shared-services account (A, the
server's own) holds a secret encrypted with its customer-managed key; a workload account (B, created with
``khoa account create`` while the server runs) reads it through a role, and only when A's secret policy,
A's key policy and B's role policy all allow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.errors import code_of, refused
from tests.support.iam import allow, document
from tests.support.identity import (
    ROOT_ARN,
    Caller,
    explicit,
    implicit,
    new_user,
    resource_policy,
    session,
)
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

CURRENT = {"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}


def principal_statement(principal: str | list[str], action: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*", **extra}


# -- within the account ---------------------------------------------------------------------------------


def test_a_key_change_without_permission_to_encrypt_leaves_the_versions_where_they_are(
    server: KhoaServer, iam: Any, sm: Any, kms: Any
) -> None:
    """UpdateSecret's KmsKeyId by a caller who may not encrypt under the new key: as AWS documents,
    the secret's key changes (for new versions) and the existing versions are not re-encrypted; a
    new value under that key is refused, with nothing written."""
    user = new_user(server, iam, allow(["secretsmanager:*", "kms:Decrypt", "kms:DescribeKey"]))
    secrets = user.client("secretsmanager")
    name = unique("app/rekey")
    first = secrets.create_secret(Name=name, SecretString="one")["VersionId"]
    # The key policy lets the account's IAM policies decide; the user's allow no encryption.
    locked = kms.create_key()["KeyMetadata"]
    secrets.update_secret(SecretId=name, KmsKeyId=locked["Arn"])
    assert secrets.describe_secret(SecretId=name)["KmsKeyId"] == locked["Arn"]
    listed = secrets.list_secret_version_ids(SecretId=name)["Versions"]
    assert [v["KmsKeyIds"] for v in listed if v["VersionId"] == first] != [[locked["Arn"]]]
    assert secrets.get_secret_value(SecretId=name)["SecretString"] == "one"
    assert code_of(secrets.put_secret_value, SecretId=name, SecretString="two") == "AccessDeniedException"
    assert code_of(secrets.update_secret, SecretId=name, SecretString="two") == "AccessDeniedException"
    assert secrets.get_secret_value(SecretId=name)["VersionId"] == first
    # The account root may encrypt under it: its key change re-encrypts the labelled versions.
    sm.update_secret(SecretId=name, KmsKeyId="")
    sm.update_secret(SecretId=name, KmsKeyId=locked["Arn"])
    listed = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert [v["KmsKeyIds"] for v in listed if v["VersionId"] == first] == [[locked["Arn"]]]


def test_a_resource_policy_alone_allows_a_user_of_the_account(server: KhoaServer, iam: Any, sm: Any) -> None:
    user = new_user(server, iam)
    arn = sm.create_secret(Name=unique("shared"), SecretString="v")["ARN"]
    client = user.client("secretsmanager")
    assert refused(client.get_secret_value, SecretId=arn) == (
        "AccessDeniedException",
        implicit(user.arn, "secretsmanager:GetSecretValue", arn),
    )
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(principal_statement(user.arn, "secretsmanager:GetSecretValue")),
    )
    assert client.get_secret_value(SecretId=arn)["SecretString"] == "v"
    assert code_of(client.describe_secret, SecretId=arn) == "AccessDeniedException"
    # Naming the account only delegates to IAM policies, which allow nothing here.
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(principal_statement(ROOT_ARN, "secretsmanager:GetSecretValue")),
    )
    assert refused(client.get_secret_value, SecretId=arn)[1] == implicit(
        user.arn, "secretsmanager:GetSecretValue", arn
    )
    sm.delete_resource_policy(SecretId=arn)
    assert code_of(client.get_secret_value, SecretId=arn) == "AccessDeniedException"


def test_a_resource_policy_grant_to_a_user_is_not_limited_by_its_boundary(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    """Within an account, a resource-based policy naming the IAM user grants past an implicit deny in
    the user's permissions boundary (AWS's evaluation logic)."""
    boundary = iam.create_policy(PolicyName=unique("nothing"), PolicyDocument=document(allow("kms:ListKeys")))
    user = new_user(server, iam)
    iam.put_user_permissions_boundary(UserName=user.name, PermissionsBoundary=boundary["Policy"]["Arn"])
    arn = sm.create_secret(Name=unique("direct"), SecretString="v")["ARN"]
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(principal_statement(user.arn, "secretsmanager:GetSecretValue")),
    )
    assert user.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "v"


def test_an_explicit_deny_in_the_resource_policy_applies_to_everyone(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    user = new_user(server, iam, allow("secretsmanager:*"))
    arn = sm.create_secret(Name=unique("locked"), SecretString="v")["ARN"]
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(
            {
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        ),
    )
    assert refused(user.client("secretsmanager").get_secret_value, SecretId=arn) == (
        "AccessDeniedException",
        explicit(user.arn, "secretsmanager:GetSecretValue", arn, "a resource-based policy"),
    )
    assert refused(sm.get_secret_value, SecretId=arn)[1] == explicit(
        ROOT_ARN, "secretsmanager:GetSecretValue", arn, "a resource-based policy"
    )
    user.client("secretsmanager").describe_secret(SecretId=arn)
    sm.delete_resource_policy(SecretId=arn)
    sm.get_secret_value(SecretId=arn)


def test_version_stage_condition(server: KhoaServer, iam: Any, sm: Any) -> None:
    arn = sm.create_secret(Name=unique("staged"), SecretString="one")["ARN"]
    sm.put_secret_value(SecretId=arn, SecretString="two")
    user = new_user(server, iam, allow("secretsmanager:GetSecretValue", arn, Condition=CURRENT))
    client = user.client("secretsmanager")
    assert client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"] == "two"
    assert refused(client.get_secret_value, SecretId=arn, VersionStage="AWSPREVIOUS") == (
        "AccessDeniedException",
        implicit(user.arn, "secretsmanager:GetSecretValue", arn),
    )
    # The key holds only the stage the request names: none named, no match for StringEquals.
    assert code_of(client.get_secret_value, SecretId=arn) == "AccessDeniedException"
    iam.put_user_policy(
        UserName=user.name,
        PolicyName="inline",
        PolicyDocument=document(
            allow(
                "secretsmanager:GetSecretValue",
                arn,
                Condition={"StringEqualsIfExists": {"secretsmanager:VersionStage": "AWSCURRENT"}},
            )
        ),
    )
    assert client.get_secret_value(SecretId=arn)["SecretString"] == "two"
    assert (
        code_of(client.get_secret_value, SecretId=arn, VersionStage="AWSPREVIOUS") == "AccessDeniedException"
    )


def test_resource_tag_conditions(server: KhoaServer, iam: Any, sm: Any) -> None:
    prod = sm.create_secret(Name=unique("p"), SecretString="v", Tags=[{"Key": "env", "Value": "prod"}])["ARN"]
    dev = sm.create_secret(Name=unique("d"), SecretString="v", Tags=[{"Key": "env", "Value": "dev"}])["ARN"]
    user = new_user(
        server,
        iam,
        allow(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"secretsmanager:ResourceTag/env": "dev"}},
        ),
        allow("secretsmanager:DescribeSecret", Condition={"StringEquals": {"aws:ResourceTag/env": "prod"}}),
    )
    client = user.client("secretsmanager")
    client.get_secret_value(SecretId=dev)
    client.describe_secret(SecretId=prod)
    assert refused(client.get_secret_value, SecretId=prod)[1] == implicit(
        user.arn, "secretsmanager:GetSecretValue", prod
    )
    assert code_of(client.describe_secret, SecretId=dev) == "AccessDeniedException"
    # Retagging moves the secret between the two rules.
    sm.tag_resource(SecretId=prod, Tags=[{"Key": "env", "Value": "dev"}])
    client.get_secret_value(SecretId=prod)
    assert code_of(client.describe_secret, SecretId=prod) == "AccessDeniedException"


# -- across accounts --------------------------------------------------------------------------------------


@dataclass
class CrossAccount:
    """A's secret under A's customer key; B's role that wants to read it."""

    account_b: Caller
    role_name: str
    role_arn: str
    reader: Caller  # a session of B's role
    key: str
    secret: str
    b_iam: Any


READER_POLICY = document(allow(["secretsmanager:GetSecretValue", "kms:Decrypt"]))


def _secret_policy(role_arn: str) -> str:
    return resource_policy(principal_statement(role_arn, "secretsmanager:GetSecretValue", Condition=CURRENT))


def _key_policy(*readers: str) -> str:
    statements = [principal_statement(ROOT_ARN, "kms:*")]
    if readers:
        statements.append(principal_statement(list(readers), "kms:Decrypt"))
    return resource_policy(*statements)


@pytest.fixture
def cross(server: KhoaServer, account_b: Caller, kms: Any, sm: Any) -> CrossAccount:
    b_iam = account_b.client("iam")
    role = unique("workload")
    role_arn = b_iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=document(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_b.account_id}:root"},
                "Action": "sts:AssumeRole",
            }
        ),
    )["Role"]["Arn"]
    b_iam.put_role_policy(RoleName=role, PolicyName="read-shared", PolicyDocument=READER_POLICY)
    user = new_user(server, b_iam, allow("sts:AssumeRole", role_arn))
    reader = session(user, role_arn, "app")
    key = kms.create_key(Policy=_key_policy(role_arn))["KeyMetadata"]["Arn"]
    secret = sm.create_secret(Name=f"shared/{unique('db')}", SecretString="hunter2", KmsKeyId=key)["ARN"]
    sm.put_resource_policy(SecretId=secret, ResourcePolicy=_secret_policy(role_arn))
    return CrossAccount(account_b, role, role_arn, reader, key, secret, b_iam)


def test_account_b_is_a_separate_account(server: KhoaServer, account_b: Caller, sm: Any) -> None:
    identity = account_b.client("sts").get_caller_identity()
    assert identity["Account"] == account_b.account_id != ACCOUNT_ID
    assert identity["Arn"] == f"arn:aws:iam::{account_b.account_id}:root"
    name = unique("same-name")
    sm.create_secret(Name=name, SecretString="a")
    b_arn = account_b.client("secretsmanager").create_secret(Name=name, SecretString="b")["ARN"]
    assert f":{account_b.account_id}:secret:{name}-" in b_arn
    assert account_b.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"] == "b"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "a"


def test_cross_account_read_needs_all_three_policies(cross: CrossAccount, kms: Any, sm: Any) -> None:
    """The must-show: B's role reads A's secret only when A's secret policy, A's key policy and B's
    role policy all allow; removing any one yields AccessDenied."""
    reader = cross.reader.client("secretsmanager")
    assert cross.reader.arn == f"arn:aws:sts::{cross.account_b.account_id}:assumed-role/{cross.role_name}/app"
    read = reader.get_secret_value(SecretId=cross.secret, VersionStage="AWSCURRENT")
    assert (read["ARN"], read["SecretString"]) == (cross.secret, "hunter2")
    # Other stages are outside the secret policy's condition.
    sm.put_secret_value(SecretId=cross.secret, SecretString="hunter3")
    assert (
        reader.get_secret_value(SecretId=cross.secret, VersionStage="AWSCURRENT")["SecretString"] == "hunter3"
    )
    assert refused(reader.get_secret_value, SecretId=cross.secret, VersionStage="AWSPREVIOUS") == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "secretsmanager:GetSecretValue", cross.secret, "resource-based policy"),
    )

    # 1. Without A's secret policy: the resource-based policy must allow across accounts.
    sm.delete_resource_policy(SecretId=cross.secret)
    assert refused(reader.get_secret_value, SecretId=cross.secret, VersionStage="AWSCURRENT") == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "secretsmanager:GetSecretValue", cross.secret, "resource-based policy"),
    )
    sm.put_resource_policy(SecretId=cross.secret, ResourcePolicy=_secret_policy(cross.role_arn))
    reader.get_secret_value(SecretId=cross.secret, VersionStage="AWSCURRENT")

    # 2. Without A's key policy allowing B: Secrets Manager cannot decrypt for B's role.
    kms.put_key_policy(KeyId=cross.key, PolicyName="default", Policy=_key_policy())
    assert refused(reader.get_secret_value, SecretId=cross.secret, VersionStage="AWSCURRENT") == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "kms:Decrypt", cross.key, "resource-based policy"),
    )
    kms.put_key_policy(KeyId=cross.key, PolicyName="default", Policy=_key_policy(cross.role_arn))
    reader.get_secret_value(SecretId=cross.secret, VersionStage="AWSCURRENT")

    # 3. Without B's role policy: B's own side must allow as well, for both actions.
    cross.b_iam.put_role_policy(
        RoleName=cross.role_name,
        PolicyName="read-shared",
        PolicyDocument=document(allow("kms:Decrypt")),
    )
    assert refused(reader.get_secret_value, SecretId=cross.secret, VersionStage="AWSCURRENT") == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "secretsmanager:GetSecretValue", cross.secret),
    )
    cross.b_iam.put_role_policy(
        RoleName=cross.role_name,
        PolicyName="read-shared",
        PolicyDocument=document(allow("secretsmanager:GetSecretValue")),
    )
    assert refused(reader.get_secret_value, SecretId=cross.secret, VersionStage="AWSCURRENT") == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "kms:Decrypt", cross.key),
    )
    cross.b_iam.put_role_policy(
        RoleName=cross.role_name, PolicyName="read-shared", PolicyDocument=READER_POLICY
    )
    assert (
        reader.get_secret_value(SecretId=cross.secret, VersionStage="AWSCURRENT")["SecretString"] == "hunter3"
    )


def test_cross_account_naming_the_account_delegates_to_its_iam_policies(
    server: KhoaServer, cross: CrossAccount, kms: Any, sm: Any
) -> None:
    """A's policies may name B's account root; then B's IAM policies decide who in B may read."""
    b_root = f"arn:aws:iam::{cross.account_b.account_id}:root"
    sm.put_resource_policy(
        SecretId=cross.secret,
        ResourcePolicy=resource_policy(principal_statement(b_root, "secretsmanager:GetSecretValue")),
    )
    kms.put_key_policy(KeyId=cross.key, PolicyName="default", Policy=_key_policy(b_root))
    cross.reader.client("secretsmanager").get_secret_value(SecretId=cross.secret)
    # A user of B with no IAM policy of its own is refused by its own account's side.
    bare = new_user(server, cross.b_iam)
    assert refused(bare.client("secretsmanager").get_secret_value, SecretId=cross.secret) == (
        "AccessDeniedException",
        implicit(bare.arn, "secretsmanager:GetSecretValue", cross.secret),
    )
    # B's root needs no IAM policy.
    assert cross.account_b.client("secretsmanager").get_secret_value(SecretId=cross.secret)[
        "SecretString"
    ] == ("hunter2")


def test_cross_account_secrets_are_found_by_full_arn_only(cross: CrossAccount) -> None:
    reader = cross.reader.client("secretsmanager")
    name = cross.secret.split(":secret:", 1)[1][:-7]
    for secret_id in (name, cross.secret[:-7]):
        assert refused(reader.get_secret_value, SecretId=secret_id) == (
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        )


def test_cross_account_access_to_other_operations_follows_the_resource_policy(
    cross: CrossAccount, sm: Any
) -> None:
    reader = cross.reader.client("secretsmanager")
    # The secret policy allows only GetSecretValue: DescribeSecret and writes are refused.
    assert refused(reader.describe_secret, SecretId=cross.secret) == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "secretsmanager:DescribeSecret", cross.secret, "resource-based policy"),
    )
    assert (
        code_of(reader.put_secret_value, SecretId=cross.secret, SecretString="x") == "AccessDeniedException"
    )
    assert code_of(reader.delete_secret, SecretId=cross.secret) == "AccessDeniedException"
    sm.get_secret_value(SecretId=cross.secret)


def test_the_aws_managed_key_cannot_be_used_across_accounts(cross: CrossAccount, kms: Any, sm: Any) -> None:
    """A secret under aws/secretsmanager is unreadable from another account whatever the policies say:
    that key's policy allows only callers of its own account (kms:CallerAccount)."""
    arn = sm.create_secret(Name=unique("managed"), SecretString="v")["ARN"]
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=_secret_policy(cross.role_arn))
    managed = kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS"
    assert refused(
        cross.reader.client("secretsmanager").get_secret_value, SecretId=arn, VersionStage="AWSCURRENT"
    ) == (
        "AccessDeniedException",
        implicit(cross.reader.arn, "kms:Decrypt", managed["Arn"], "resource-based policy"),
    )
    # Its policy cannot be changed to let B in.
    assert code_of(
        kms.put_key_policy, KeyId=managed["KeyId"], PolicyName="default", Policy=_key_policy()
    ) == ("AccessDeniedException")


def test_a_deny_in_the_secret_policy_beats_the_other_account(cross: CrossAccount, sm: Any) -> None:
    sm.put_resource_policy(
        SecretId=cross.secret,
        ResourcePolicy=resource_policy(
            principal_statement(cross.role_arn, "secretsmanager:GetSecretValue"),
            {
                "Effect": "Deny",
                "Principal": {"AWS": cross.role_arn},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalTag/clearance": "high"}},
            },
        ),
    )
    reader = cross.reader.client("secretsmanager")
    assert refused(reader.get_secret_value, SecretId=cross.secret)[1] == explicit(
        cross.reader.arn, "secretsmanager:GetSecretValue", cross.secret, "a resource-based policy"
    )
    cross.b_iam.tag_role(RoleName=cross.role_name, Tags=[{"Key": "clearance", "Value": "high"}])
    assert reader.get_secret_value(SecretId=cross.secret)["SecretString"] == "hunter2"


def test_principal_account_condition_in_a_secret_policy(cross: CrossAccount, sm: Any) -> None:
    sm.put_resource_policy(
        SecretId=cross.secret,
        ResourcePolicy=resource_policy(
            principal_statement(
                "*",
                "secretsmanager:GetSecretValue",
                Condition={"StringEquals": {"aws:PrincipalAccount": cross.account_b.account_id}},
            )
        ),
    )
    cross.reader.client("secretsmanager").get_secret_value(SecretId=cross.secret)
    sm.put_resource_policy(
        SecretId=cross.secret,
        ResourcePolicy=resource_policy(
            principal_statement(
                "*",
                "secretsmanager:GetSecretValue",
                Condition={"StringEquals": {"aws:PrincipalAccount": "444455556666"}},
            )
        ),
    )
    assert code_of(cross.reader.client("secretsmanager").get_secret_value, SecretId=cross.secret) == (
        "AccessDeniedException"
    )
    # json round trip of what is stored, for the record.
    stored = json.loads(sm.get_resource_policy(SecretId=cross.secret)["ResourcePolicy"])
    assert stored["Statement"][0]["Principal"] == {"AWS": "*"}


def test_a_resource_policy_naming_a_role_or_its_session(server: KhoaServer, iam: Any, sm: Any) -> None:
    """Naming the role grants its sessions (still narrowed by session policies); naming one session's
    ARN grants that session outright, session policy or not."""
    role = unique("reader")
    role_arn = iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    caller = new_user(server, iam, allow("sts:AssumeRole", role_arn))
    arn = sm.create_secret(Name=unique("by-role"), SecretString="v")["ARN"]
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(principal_statement(role_arn, "secretsmanager:GetSecretValue")),
    )
    plain = session(caller, role_arn, "plain")
    assert plain.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "v"
    narrowed = session(caller, role_arn, "narrowed", Policy=document(allow("kms:ListKeys")))
    assert refused(narrowed.client("secretsmanager").get_secret_value, SecretId=arn) == (
        "AccessDeniedException",
        implicit(narrowed.arn, "secretsmanager:GetSecretValue", arn, "session policy"),
    )
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(principal_statement(narrowed.arn, "secretsmanager:GetSecretValue")),
    )
    assert narrowed.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "v"
    assert refused(plain.client("secretsmanager").get_secret_value, SecretId=arn)[1] == implicit(
        plain.arn, "secretsmanager:GetSecretValue", arn
    )
