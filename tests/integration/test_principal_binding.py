"""An IAM user or role named in a resource policy is that principal, not its name.

AWS binds each user and role a resource policy's Principal names to its unique ID when the policy is
saved: a principal created later under a deleted one's name inherits nothing, and the policy then shows
the deleted principal's unique ID (IAM User Guide, "AWS JSON policy elements: Principal"). A policy that
names a user or role that does not exist is refused. Checked here for KMS key policies and grants, role
trust policies and Secrets Manager resource policies, through the wire as IAM users and role sessions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import code_of
from tests.support.iam import allow, document, trust
from tests.support.identity import Caller, new_user, resource_policy, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"


def _key_policy(*statements: dict[str, Any]) -> str:
    """A key policy that delegates to IAM (the root statement) and adds ``statements``."""
    root = {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]})


def _named(principal: str, action: str | list[str], resource: str = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": resource}


def _delete_user(iam: Any, name: str) -> None:
    for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    for policy in iam.list_user_policies(UserName=name)["PolicyNames"]:
        iam.delete_user_policy(UserName=name, PolicyName=policy)
    iam.delete_user(UserName=name)


def test_a_user_recreated_under_a_deleted_name_inherits_nothing(server: KhoaServer, iam: Any) -> None:
    kms, sm = server.client("kms"), server.client("secretsmanager")
    name = unique("alice")
    alice = new_user(server, iam, name=name)
    user_id = iam.get_user(UserName=name)["User"]["UserId"]
    key = kms.create_key(Policy=_key_policy(_named(alice.arn, "kms:Decrypt")))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for alice")["CiphertextBlob"]
    granted = kms.create_key()["KeyMetadata"]["KeyId"]
    granted_blob = kms.encrypt(KeyId=granted, Plaintext=b"by grant")["CiphertextBlob"]
    grant_id = kms.create_grant(KeyId=granted, GranteePrincipal=alice.arn, Operations=["Decrypt"])["GrantId"]
    secret = unique("binding/alice")
    secret_arn = sm.create_secret(Name=secret, SecretString="alice's value")["ARN"]
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=resource_policy(_named(alice.arn, "secretsmanager:GetSecretValue"))
    )
    role = unique("alice-role")
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust({"AWS": alice.arn}))["Role"][
        "Arn"
    ]

    # The first alice, with no IAM policies of her own, holds all four by being named.
    assert alice.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"for alice"
    assert alice.client("kms").decrypt(CiphertextBlob=granted_blob)["Plaintext"] == b"by grant"
    assert (
        alice.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
        == "alice's value"
    )
    session(alice, role_arn)

    _delete_user(iam, name)
    # Every document now shows the deleted user's unique ID where her ARN was.
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"])["Statement"][1]["Principal"] == {
        "AWS": user_id
    }
    assert json.loads(sm.get_resource_policy(SecretId=secret)["ResourcePolicy"])["Statement"][0][
        "Principal"
    ] == {"AWS": user_id}
    trusted = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    trusted = json.loads(trusted) if isinstance(trusted, str) else trusted
    assert trusted["Statement"][0]["Principal"] == {"AWS": user_id}
    grants = kms.list_grants(KeyId=granted)["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"]) for g in grants] == [(grant_id, user_id)]

    # A new alice (a stranger with the same name and ARN) gets none of it.
    again = new_user(server, iam, name=name)
    assert again.arn == alice.arn
    assert code_of(again.client("kms").decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert code_of(again.client("kms").decrypt, CiphertextBlob=granted_blob) == "AccessDeniedException"
    assert (
        code_of(again.client("secretsmanager").get_secret_value, SecretId=secret_arn)
        == "AccessDeniedException"
    )
    with pytest.raises(ClientError) as refused:
        session(again, role_arn)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_renamed_user_keeps_what_named_it_and_its_old_name_inherits_nothing(
    server: KhoaServer, iam: Any
) -> None:
    """A rename keeps the user's unique ID: resource policies and grants that named it by its old ARN
    name it by the new one (as AWS updates them), and whoever takes the old name gets none of it."""
    kms, sm = server.client("kms"), server.client("secretsmanager")
    name = unique("bob")
    bob = new_user(server, iam, name=name)
    key = kms.create_key(Policy=_key_policy(_named(bob.arn, "kms:Decrypt")))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for bob")["CiphertextBlob"]
    granted = kms.create_key()["KeyMetadata"]["KeyId"]
    granted_blob = kms.encrypt(KeyId=granted, Plaintext=b"by grant")["CiphertextBlob"]
    kms.create_grant(KeyId=granted, GranteePrincipal=bob.arn, Operations=["Decrypt"])
    secret = sm.create_secret(Name=unique("binding/bob"), SecretString="bob's value")["ARN"]
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=resource_policy(_named(bob.arn, "secretsmanager:GetSecretValue"))
    )

    renamed = unique("bob-old")
    iam.update_user(UserName=name, NewUserName=renamed, NewPath="/moved/")
    new_arn = iam.get_user(UserName=renamed)["User"]["Arn"]
    assert new_arn == f"arn:aws:iam::{ACCOUNT_ID}:user/moved/{renamed}"
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"])["Statement"][1]["Principal"] == {
        "AWS": new_arn
    }
    assert [g["GranteePrincipal"] for g in kms.list_grants(KeyId=granted)["Grants"]] == [new_arn]
    # The renamed user (the same access key) keeps all three.
    assert bob.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"for bob"
    assert bob.client("kms").decrypt(CiphertextBlob=granted_blob)["Plaintext"] == b"by grant"
    assert bob.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] == "bob's value"
    # A new user under the old name gets none of them.
    taker = new_user(server, iam, name=name)
    assert taker.arn == bob.arn
    assert code_of(taker.client("kms").decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert code_of(taker.client("kms").decrypt, CiphertextBlob=granted_blob) == "AccessDeniedException"
    assert (
        code_of(taker.client("secretsmanager").get_secret_value, SecretId=secret) == "AccessDeniedException"
    )


def test_a_user_named_with_json_escapes_is_forgotten_too(server: KhoaServer, iam: Any) -> None:
    """``user/\\u0064ave`` is ``user/dave`` once JSON is decoded, as evaluation reads it: deleting
    dave unbinds it as it unbinds the plain spelling, while the policy is stored and returned as
    written until then."""
    kms, sm = server.client("kms"), server.client("secretsmanager")
    name = unique("dave")
    dave = new_user(server, iam, name=name)
    escaped = dave.arn.replace(f"user/{name}", f"user/\\u{ord(name[0]):04x}{name[1:]}")

    def written(*statements: dict[str, Any]) -> str:
        """The policy's JSON text with dave's ARN spelt with the escape."""
        return resource_policy(*statements).replace(f'"{dave.arn}"', f'"{escaped}"')

    key_policy = written(
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
        _named(dave.arn, "kms:Decrypt"),
    )
    assert "\\u" in key_policy and dave.arn not in key_policy
    key = kms.create_key(Policy=key_policy)["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for dave")["CiphertextBlob"]
    secret = sm.create_secret(Name=unique("binding/dave"), SecretString="dave's value")["ARN"]
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=written(_named(dave.arn, "secretsmanager:GetSecretValue"))
    )
    role = unique("dave-admin")
    trusting = {"Effect": "Allow", "Principal": {"AWS": dave.arn}, "Action": "sts:AssumeRole"}
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=written(trusting))["Role"]["Arn"]
    assert kms.get_key_policy(KeyId=key)["Policy"] == key_policy  # kept as written
    assert dave.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"for dave"
    assert dave.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] == "dave's value"
    session(dave, role_arn)

    user_id = iam.get_user(UserName=name)["User"]["UserId"]
    _delete_user(iam, name)
    again = new_user(server, iam, allow("sts:AssumeRole"), name=name)
    assert code_of(again.client("kms").decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert (
        code_of(again.client("secretsmanager").get_secret_value, SecretId=secret) == "AccessDeniedException"
    )
    with pytest.raises(ClientError) as refused:
        session(again, role_arn)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"])["Statement"][1]["Principal"] == {
        "AWS": user_id
    }


def test_a_role_recreated_under_a_deleted_name_inherits_nothing(server: KhoaServer, iam: Any) -> None:
    kms = server.client("kms")
    caller = new_user(server, iam, allow("sts:AssumeRole"))
    name = unique("app")
    path_arn = iam.create_role(
        RoleName=name, Path="/team/", AssumeRolePolicyDocument=trust({"AWS": caller.arn})
    )["Role"]["Arn"]
    role_id = iam.get_role(RoleName=name)["Role"]["RoleId"]
    key = kms.create_key(Policy=_key_policy(_named(path_arn, "kms:Decrypt")))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for the role")["CiphertextBlob"]
    assert (
        session(caller, path_arn).client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"for the role"
    )

    iam.delete_role(RoleName=name)
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"])["Statement"][1]["Principal"] == {
        "AWS": role_id
    }
    again = iam.create_role(RoleName=name, Path="/team/", AssumeRolePolicyDocument=trust({"AWS": caller.arn}))
    assert again["Role"]["Arn"] == path_arn
    assert (
        code_of(session(caller, path_arn).client("kms").decrypt, CiphertextBlob=blob)
        == "AccessDeniedException"
    )


def test_a_policy_may_name_only_users_and_roles_that_exist(server: KhoaServer, iam: Any) -> None:
    kms, sm = server.client("kms"), server.client("secretsmanager")
    nobody = f"arn:aws:iam::{ACCOUNT_ID}:user/{unique('nobody')}"
    no_role = f"arn:aws:iam::{ACCOUNT_ID}:role/{unique('no-role')}"
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.get_key_policy(KeyId=key)["Policy"]
    keys = len(kms.list_keys(Limit=1000)["Keys"])
    secret = unique("binding/named")
    sm.create_secret(Name=secret, SecretString="v")
    kept = resource_policy(_named(ROOT, "secretsmanager:GetSecretValue"))
    sm.put_resource_policy(SecretId=secret, ResourcePolicy=kept)
    for missing in (nobody, no_role):
        bad = _key_policy(_named(missing, "kms:Decrypt"))
        assert code_of(kms.put_key_policy, KeyId=key, Policy=bad) == "MalformedPolicyDocumentException"
        assert code_of(kms.create_key, Policy=bad) == "MalformedPolicyDocumentException"
        with pytest.raises(ClientError) as refused:
            sm.put_resource_policy(
                SecretId=secret,
                ResourcePolicy=resource_policy(_named(missing, "secretsmanager:GetSecretValue")),
            )
        assert refused.value.response["Error"] == {
            "Code": "MalformedPolicyDocumentException",
            "Message": "This resource policy contains an unsupported principal.",
        }
        with pytest.raises(ClientError) as refused:
            iam.create_role(RoleName=unique("r"), AssumeRolePolicyDocument=trust({"AWS": missing}))
        assert refused.value.response["Error"]["Code"] == "MalformedPolicyDocument"
        assert refused.value.response["Error"]["Message"] == f'Invalid principal in policy: "AWS":"{missing}"'
    assert kms.get_key_policy(KeyId=key)["Policy"] == before
    assert sm.get_resource_policy(SecretId=secret)["ResourcePolicy"] == kept
    assert len(kms.list_keys(Limit=1000)["Keys"]) == keys
    role = unique("kept")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust({"AWS": ROOT}))
    assert (
        code_of(iam.update_assume_role_policy, RoleName=role, PolicyDocument=trust({"AWS": nobody}))
        == "MalformedPolicyDocument"
    )

    # Accounts, another account's principals (beyond this installation's knowledge) and existing users
    # are accepted; so is a unique ID in a key policy (as a deleted principal leaves it).
    user = new_user(server, iam)
    for fine in (ACCOUNT_ID, ROOT, "arn:aws:iam::999988887777:user/elsewhere", user.arn):
        kms.put_key_policy(KeyId=key, Policy=_key_policy(_named(fine, "kms:Decrypt")))
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=trust({"AWS": fine}))
    user_id = iam.get_user(UserName=user.name)["User"]["UserId"]
    kms.put_key_policy(KeyId=key, Policy=_key_policy(_named(user_id, "kms:Decrypt")))


def test_an_iam_identity_policy_is_unaffected(server: KhoaServer, iam: Any) -> None:
    """Identity policies name no principal; a deleted user's own inline policy goes with the user, and
    a recreated user gets only what is attached to the new one."""
    name = unique("carol")
    first: Caller = new_user(server, iam, allow("kms:ListKeys"), name=name)
    first.client("kms").list_keys()
    _delete_user(iam, name)
    again = new_user(server, iam, name=name)
    assert code_of(again.client("kms").list_keys) == "AccessDeniedException"
    iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=document(allow("kms:ListKeys")))
    again.client("kms").list_keys()


def test_a_grant_may_name_only_users_and_roles_that_exist(server: KhoaServer, iam: Any) -> None:
    """KMS answers InvalidArnException ("ARN does not refer to a valid principal") for a grantee or
    retiring principal that does not exist, the error AWS's own clients retry on while a new role
    propagates: otherwise the grant would wait for whoever is created under that name."""
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    user = new_user(server, iam)
    nobody = f"arn:aws:iam::{ACCOUNT_ID}:user/{unique('nobody')}"
    no_role = f"arn:aws:iam::{ACCOUNT_ID}:role/{unique('no-role')}"
    for params in (
        {"GranteePrincipal": nobody},
        {"GranteePrincipal": no_role},
        {"GranteePrincipal": user.arn, "RetiringPrincipal": nobody},
    ):
        with pytest.raises(ClientError) as refused:
            kms.create_grant(KeyId=key, Operations=["Decrypt"], **params)
        missing = nobody if nobody in params.values() else no_role
        assert refused.value.response["Error"] == {
            "Code": "InvalidArnException",
            "Message": f"ARN does not refer to a valid principal: {missing}",
        }
    assert kms.list_grants(KeyId=key)["Grants"] == []
    # Existing users, the account, and principals of accounts this installation does not hold.
    for grantee in (user.arn, ROOT, "arn:aws:iam::999988887777:role/elsewhere"):
        kms.create_grant(
            KeyId=key, Operations=["Decrypt"], GranteePrincipal=grantee, RetiringPrincipal=user.arn
        )
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 3
