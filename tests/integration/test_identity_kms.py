"""KMS key policies, grants and KMS condition keys enforced end to end.

A key policy is required: it must allow the caller, either by name or by delegating to the account
(``arn:aws:iam::ACCOUNT:root``), after which IAM policies decide. Grants allow their grantee the listed
operations. Secrets Manager and Parameter Store use keys on the caller's behalf with
``kms:ViaService``, so a key can be usable through a service and not directly.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.support.errors import code_of, refused
from tests.support.iam import allow, document
from tests.support.identity import ROOT_ARN, Caller, explicit, implicit, new_user, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

VIA_SECRETS = f"secretsmanager.{REGION}.amazonaws.com"
VIA_SSM = f"ssm.{REGION}.amazonaws.com"


def key_policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def grant_to(principal: str | list[str], action: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*", **extra}


ADMIN_ACTIONS = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
]
USER_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


# -- key policies are required -----------------------------------------------------------------------


def test_a_key_policy_naming_someone_else_denies_even_an_administrator(
    server: KhoaServer, iam: Any, kms: Any
) -> None:
    owner = new_user(server, iam)
    admin = new_user(server, iam, allow("*"))
    key = kms.create_key(
        Policy=key_policy(grant_to(owner.arn, "kms:*")), BypassPolicyLockoutSafetyCheck=True
    )["KeyMetadata"]["Arn"]
    # The owner needs no IAM policy: the key policy names it.
    ciphertext = owner.client("kms").encrypt(KeyId=key, Plaintext=b"data")["CiphertextBlob"]
    assert owner.client("kms").describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    # An administrator by IAM policy is refused every operation: the key policy does not delegate.
    for call, action, kwargs in [
        (admin.client("kms").encrypt, "kms:Encrypt", {"KeyId": key, "Plaintext": b"x"}),
        (admin.client("kms").decrypt, "kms:Decrypt", {"CiphertextBlob": ciphertext}),
        (admin.client("kms").describe_key, "kms:DescribeKey", {"KeyId": key}),
        (admin.client("kms").put_key_policy, "kms:PutKeyPolicy", {"KeyId": key, "Policy": "{}"}),
    ]:
        assert refused(call, **kwargs) == (
            "AccessDeniedException",
            implicit(admin.arn, action, key, "resource-based policy"),
        )
    # Not even the account root.
    assert refused(kms.encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(ROOT_ARN, "kms:Encrypt", key, "resource-based policy"),
    )


def test_the_default_key_policy_delegates_to_iam_policies(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    default = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert default["Statement"] == [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": ROOT_ARN},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    nobody = new_user(server, iam)
    assert refused(nobody.client("kms").encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(nobody.arn, "kms:Encrypt", key),
    )
    user = new_user(server, iam, allow(["kms:Encrypt", "kms:Decrypt"], key))
    blob = user.client("kms").encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert user.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert (
        code_of(user.client("kms").generate_data_key, KeyId=key, KeySpec="AES_256") == "AccessDeniedException"
    )


def test_a_key_policy_can_allow_a_user_without_any_iam_policy(server: KhoaServer, iam: Any, kms: Any) -> None:
    user = new_user(server, iam)
    key = kms.create_key(Policy=key_policy(grant_to(ROOT_ARN, "kms:*"), grant_to(user.arn, "kms:Encrypt")))[
        "KeyMetadata"
    ]["Arn"]
    user.client("kms").encrypt(KeyId=key, Plaintext=b"x")
    assert code_of(user.client("kms").describe_key, KeyId=key) == "AccessDeniedException"
    # A Deny in the key policy beats the account's own IAM allows.
    admin = new_user(server, iam, allow("kms:*"))
    kms.put_key_policy(
        KeyId=key,
        PolicyName="default",
        Policy=key_policy(
            grant_to(ROOT_ARN, "kms:*"),
            {"Effect": "Deny", "Principal": {"AWS": admin.arn}, "Action": "kms:Encrypt", "Resource": "*"},
        ),
    )
    admin.client("kms").describe_key(KeyId=key)
    assert refused(admin.client("kms").encrypt, KeyId=key, Plaintext=b"x")[1] == explicit(
        admin.arn, "kms:Encrypt", key, "a resource-based policy"
    )


def test_key_administrators_cannot_use_the_key_and_users_only_through_secrets_manager(
    server: KhoaServer, iam: Any, kms: Any
) -> None:
    """The must-show: separate administrators and users, users limited by kms:ViaService."""
    admin = new_user(server, iam, allow("kms:*"))
    user = new_user(
        server,
        iam,
        allow(
            ["secretsmanager:CreateSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
        ),
        allow(["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"]),
    )
    policy = key_policy(
        {"Sid": "Administrators", **grant_to([admin.arn, ROOT_ARN], ADMIN_ACTIONS)},
        {
            "Sid": "Users",
            **grant_to(user.arn, USER_ACTIONS),
            "Condition": {"StringEquals": {"kms:ViaService": VIA_SECRETS}},
        },
    )
    key = kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    name = unique("via")
    secret = user.client("secretsmanager").create_secret(Name=name, SecretString="s3cret", KmsKeyId=key)[
        "ARN"
    ]
    user.client("secretsmanager").put_secret_value(SecretId=secret, SecretString="s3cret-2")
    assert user.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] == "s3cret-2"

    # The administrator manages the key...
    admin_kms = admin.client("kms")
    admin_kms.describe_key(KeyId=key)
    admin_kms.tag_resource(KeyId=key, Tags=[{"TagKey": "owner", "TagValue": "platform"}])
    admin_kms.disable_key(KeyId=key)
    admin_kms.enable_key(KeyId=key)
    # ... but cannot use it, directly or through Secrets Manager.
    data_key, context = _data_key_of(server, secret)
    for action, call, kwargs in [
        ("kms:Encrypt", admin_kms.encrypt, {"KeyId": key, "Plaintext": b"x"}),
        ("kms:Decrypt", admin_kms.decrypt, {"CiphertextBlob": data_key, "EncryptionContext": context}),
    ]:
        assert refused(call, **kwargs) == (
            "AccessDeniedException",
            implicit(admin.arn, action, key, "resource-based policy"),
        )
    # The user cannot call KMS directly, not even on the very data key Secrets Manager decrypts.
    user_kms = user.client("kms")
    assert refused(user_kms.decrypt, CiphertextBlob=data_key, EncryptionContext=context) == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Decrypt", key, "resource-based policy"),
    )
    assert code_of(user_kms.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
    assert code_of(user_kms.generate_data_key, KeyId=key, KeySpec="AES_256") == "AccessDeniedException"
    # Describe* is delegated to the account (the administrators' statement names its root) and the
    # user's IAM policy allows DescribeKey; administering it the IAM policy does not allow.
    user_kms.describe_key(KeyId=key)
    assert refused(user_kms.disable_key, KeyId=key)[1] == implicit(user.arn, "kms:DisableKey", key)
    # Through Parameter Store (another kms:ViaService) the user is refused as well.
    ssm_user = new_user(
        server, iam, allow(["ssm:PutParameter", "ssm:GetParameter"]), allow(["kms:Encrypt", "kms:Decrypt"])
    )
    kms.put_key_policy(
        KeyId=key,
        PolicyName="default",
        Policy=key_policy(
            {"Sid": "Administrators", **grant_to([admin.arn, ROOT_ARN], ADMIN_ACTIONS)},
            {
                "Sid": "Users",
                **grant_to([user.arn, ssm_user.arn], USER_ACTIONS),
                "Condition": {"StringEquals": {"kms:ViaService": VIA_SECRETS}},
            },
        ),
    )
    code, message = refused(
        ssm_user.client("ssm").put_parameter, Name=f"/{name}", Value="v", Type="SecureString", KeyId=key
    )
    # Parameter Store passes KMS's refusal on with KMS's request details appended, as AWS does.
    assert code == "AccessDeniedException"
    assert message.startswith(
        implicit(ssm_user.arn, "kms:Encrypt", key, "resource-based policy") + " (Service: AWSKMS;"
    )


def _data_key_of(server: KhoaServer, secret_arn: str) -> tuple[bytes, dict[str, str]]:
    """The encrypted data key of the secret's newest version, as stored, and its encryption context."""
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        version_id, blob = db.execute(
            "SELECT v.version_id, v.encrypted_data_key FROM sm_versions v JOIN sm_secrets s "
            "ON s.secret_id = v.secret_id WHERE s.arn = ? ORDER BY v.created_at DESC LIMIT 1",
            (secret_arn,),
        ).fetchone()
    return bytes(blob), {"SecretARN": secret_arn, "SecretVersionId": version_id}


def test_via_service_through_parameter_store(server: KhoaServer, iam: Any, kms: Any) -> None:
    user = new_user(server, iam, allow(["ssm:PutParameter", "ssm:GetParameter"]), allow("kms:*"))
    key = kms.create_key(
        Policy=key_policy(
            grant_to(ROOT_ARN, ["kms:Describe*", "kms:Get*", "kms:List*", "kms:Put*"]),
            {**grant_to(ROOT_ARN, "kms:*"), "Condition": {"StringEquals": {"kms:ViaService": VIA_SSM}}},
        )
    )["KeyMetadata"]["Arn"]
    name = f"/identity/{unique('secure')}"
    user.client("ssm").put_parameter(Name=name, Value="s3cret", Type="SecureString", KeyId=key)
    got = user.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert got["Value"] == "s3cret"
    assert refused(user.client("kms").encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key, "resource-based policy"),
    )
    # The same key, through Secrets Manager, is another service: refused.
    sm_user = new_user(server, iam, allow("secretsmanager:CreateSecret"), allow("kms:*"))
    assert refused(
        sm_user.client("secretsmanager").create_secret, Name=unique("s"), SecretString="v", KmsKeyId=key
    ) == ("AccessDeniedException", implicit(sm_user.arn, "kms:GenerateDataKey", key, "resource-based policy"))


def test_the_identity_policy_can_require_via_service_too(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(
        server,
        iam,
        allow(["secretsmanager:CreateSecret", "secretsmanager:GetSecretValue"]),
        allow(
            ["kms:Decrypt", "kms:GenerateDataKey"],
            key,
            Condition={"StringEquals": {"kms:ViaService": VIA_SECRETS}},
        ),
    )
    arn = user.client("secretsmanager").create_secret(Name=unique("s"), SecretString="v", KmsKeyId=key)["ARN"]
    assert user.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "v"
    data_key, context = _data_key_of(server, arn)
    assert refused(user.client("kms").decrypt, CiphertextBlob=data_key, EncryptionContext=context) == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Decrypt", key),
    )
    # The root user of the account decrypts it directly (the default key policy allows the account).
    assert len(kms.decrypt(CiphertextBlob=data_key, EncryptionContext=context)["Plaintext"]) == 32


# -- grants ------------------------------------------------------------------------------------------


def test_grants_allow_the_grantee_the_listed_operations(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    grantee = new_user(server, iam)
    client = grantee.client("kms")
    billing = kms.encrypt(KeyId=key, Plaintext=b"b", EncryptionContext={"app": "billing"})["CiphertextBlob"]
    payroll = kms.encrypt(KeyId=key, Plaintext=b"p", EncryptionContext={"app": "payroll"})["CiphertextBlob"]
    assert code_of(client.decrypt, CiphertextBlob=billing, EncryptionContext={"app": "billing"}) == (
        "AccessDeniedException"
    )
    grant = kms.create_grant(
        KeyId=key,
        GranteePrincipal=grantee.arn,
        Operations=["Decrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextSubset": {"app": "billing"}},
    )
    # The grant's operations, within its encryption-context constraint.
    assert client.decrypt(CiphertextBlob=billing, EncryptionContext={"app": "billing"})["Plaintext"] == b"b"
    client.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "billing", "x": "y"})
    assert refused(client.decrypt, CiphertextBlob=payroll, EncryptionContext={"app": "payroll"}) == (
        "AccessDeniedException",
        implicit(grantee.arn, "kms:Decrypt", key),
    )
    assert code_of(client.generate_data_key, KeyId=key, KeySpec="AES_256") == "AccessDeniedException"
    # Operations the grant does not list.
    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"}) == (
        "AccessDeniedException"
    )
    assert code_of(client.describe_key, KeyId=key) == "AccessDeniedException"
    # EncryptionContextEquals: exactly that context.
    exact = kms.create_grant(
        KeyId=key,
        GranteePrincipal=grantee.arn,
        Operations=["Encrypt"],
        Constraints={"EncryptionContextEquals": {"app": "payroll"}},
    )
    client.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"})
    assert code_of(
        client.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll", "x": "y"}
    ) == ("AccessDeniedException")
    # Revoked or retired grants stop allowing at once.
    kms.revoke_grant(KeyId=key, GrantId=grant["GrantId"])
    assert code_of(client.decrypt, CiphertextBlob=billing, EncryptionContext={"app": "billing"}) == (
        "AccessDeniedException"
    )
    kms.retire_grant(KeyId=key, GrantId=exact["GrantId"])
    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"}) == (
        "AccessDeniedException"
    )


def test_a_grant_does_not_override_an_explicit_deny(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    grantee = new_user(server, iam, {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"})
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    kms.create_grant(KeyId=key, GranteePrincipal=grantee.arn, Operations=["Decrypt"])
    assert refused(grantee.client("kms").decrypt, CiphertextBlob=blob)[1] == explicit(
        grantee.arn, "kms:Decrypt", key
    )


def test_a_grant_to_a_role_covers_its_sessions(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    role = unique("granted")
    role_arn = iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    caller = new_user(server, iam, allow("sts:AssumeRole", role_arn))
    kms.create_grant(KeyId=key, GranteePrincipal=role_arn, Operations=["Encrypt"])
    client = session(caller, role_arn, "granted").client("kms")
    client.encrypt(KeyId=key, Plaintext=b"x")
    assert code_of(client.describe_key, KeyId=key) == "AccessDeniedException"


# -- KMS condition keys ------------------------------------------------------------------------------


def test_encryption_context_conditions(server: KhoaServer, iam: Any, kms: Any) -> None:
    user = new_user(server, iam)
    key = kms.create_key(
        Policy=key_policy(
            grant_to(ROOT_ARN, "kms:*"),
            {
                **grant_to(user.arn, ["kms:Encrypt", "kms:Decrypt"]),
                "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}},
            },
            {
                **grant_to(user.arn, "kms:GenerateDataKey"),
                "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "tenant"]}},
            },
        )
    )["KeyMetadata"]["Arn"]
    client = user.client("kms")
    blob = client.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "billing"})["Plaintext"] == b"x"
    # The key policy also delegates to the account, so the refusal names the (absent) IAM policy.
    assert refused(client.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"}) == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key),
    )
    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
    # Values are case-sensitive.
    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "Billing"}) == (
        "AccessDeniedException"
    )
    client.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "a", "tenant": "t"})
    assert code_of(
        client.generate_data_key, KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "a", "other": "o"}
    ) == ("AccessDeniedException")


def test_caller_account_condition(server: KhoaServer, iam: Any, kms: Any) -> None:
    user = new_user(server, iam)
    key = kms.create_key(
        Policy=key_policy(
            grant_to(ROOT_ARN, "kms:*"),
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT_ID}},
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "kms:DescribeKey",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:CallerAccount": "444455556666"}},
            },
        )
    )["KeyMetadata"]["Arn"]
    # "*" with kms:CallerAccount = this account allows every caller of the account, IAM policy or not.
    user.client("kms").encrypt(KeyId=key, Plaintext=b"x")
    assert refused(user.client("kms").describe_key, KeyId=key)[1] == implicit(
        user.arn, "kms:DescribeKey", key
    )


def test_key_spec_and_request_alias_conditions(server: KhoaServer, iam: Any, kms: Any) -> None:
    alias = f"alias/{unique('app')}"
    key = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    user = new_user(
        server,
        iam,
        allow("kms:Encrypt", "*", Condition={"StringEquals": {"kms:RequestAlias": alias}}),
        allow("kms:DescribeKey", "*", Condition={"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}),
    )
    client = user.client("kms")
    client.encrypt(KeyId=alias, Plaintext=b"x")
    assert refused(client.encrypt, KeyId=key, Plaintext=b"x")[1] == implicit(user.arn, "kms:Encrypt", key)
    client.describe_key(KeyId=key)
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    assert code_of(client.describe_key, KeyId=rsa) == "AccessDeniedException"


# -- across accounts ------------------------------------------------------------------------------------


def test_another_account_uses_a_key_only_when_both_sides_allow(
    server: KhoaServer, kms: Any, account_b: Caller
) -> None:
    b_iam = account_b.client("iam")
    user = new_user(
        server, b_iam, allow(["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ScheduleKeyDeletion"])
    )
    client = user.client("kms")
    key = kms.create_key(
        Policy=key_policy(
            grant_to(ROOT_ARN, "kms:*"), grant_to(user.arn, ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"])
        )
    )["KeyMetadata"]
    # By key ARN (another account's key id alone names a key of the caller's own account).
    blob = client.encrypt(KeyId=key["Arn"], Plaintext=b"shared")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    assert client.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyId"] == key["KeyId"]
    assert refused(client.encrypt, KeyId=key["KeyId"], Plaintext=b"x")[0] == "NotFoundException"
    # Key administration is not something another account can do.
    assert code_of(client.schedule_key_deletion, KeyId=key["Arn"]) in (
        "NotFoundException",
        "AccessDeniedException",
    )
    # B's side must allow too.
    b_iam.delete_user_policy(UserName=user.name, PolicyName="inline")
    assert refused(client.encrypt, KeyId=key["Arn"], Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key["Arn"]),
    )
    # And A's key policy: delegation to A's own account does not reach B.
    b_iam.put_user_policy(UserName=user.name, PolicyName="inline", PolicyDocument=document(allow("kms:*")))
    client.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    kms.put_key_policy(KeyId=key["Arn"], PolicyName="default", Policy=key_policy(grant_to(ROOT_ARN, "kms:*")))
    assert refused(client.encrypt, KeyId=key["Arn"], Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key["Arn"], "resource-based policy"),
    )
    # kms:CallerAccount sees the calling account.
    kms.put_key_policy(
        KeyId=key["Arn"],
        PolicyName="default",
        Policy=key_policy(
            grant_to(ROOT_ARN, "kms:*"),
            {
                **grant_to("*", "kms:Encrypt"),
                "Condition": {"StringEquals": {"kms:CallerAccount": account_b.account_id}},
            },
        ),
    )
    client.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert code_of(
        new_user(server, server.client("iam")).client("kms").encrypt, KeyId=key["Arn"], Plaintext=b"x"
    ) == ("AccessDeniedException")


def test_another_accounts_key_by_its_alias_arn(server: KhoaServer, kms: Any, account_b: Caller) -> None:
    """Cryptographic operations and DescribeKey take another account's key by alias ARN too; the
    alias is looked up in the account the ARN names, and that key's policy decides as by key ARN."""
    user = new_user(server, account_b.client("iam"), allow("kms:*"))
    client = user.client("kms")
    shared = kms.create_key(Policy=key_policy(grant_to(ROOT_ARN, "kms:*"), grant_to(user.arn, USER_ACTIONS)))
    private = kms.create_key()["KeyMetadata"]
    shared_alias, private_alias = unique("alias/shared"), unique("alias/private")
    kms.create_alias(AliasName=shared_alias, TargetKeyId=shared["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName=private_alias, TargetKeyId=private["KeyId"])
    shared_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{shared_alias}"
    private_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{private_alias}"

    described = client.describe_key(KeyId=shared_arn)["KeyMetadata"]
    assert described["Arn"] == shared["KeyMetadata"]["Arn"]
    blob = client.encrypt(KeyId=shared_arn, Plaintext=b"by alias")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"by alias"
    assert client.decrypt(CiphertextBlob=blob, KeyId=shared_arn)["Plaintext"] == b"by alias"
    assert refused(client.encrypt, KeyId=private_arn, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", private["Arn"], "resource-based policy"),
    )
    assert refused(client.describe_key, KeyId=f"{private_arn}-missing") == (
        "NotFoundException",
        f"Alias {private_arn}-missing is not found.",
    )
    # Only by ARN: an alias name means the caller's own account; other Regions' aliases are not found.
    assert code_of(client.encrypt, KeyId=shared_alias, Plaintext=b"x") == "NotFoundException"
    elsewhere = shared_arn.replace(f":{REGION}:", ":eu-west-1:")
    assert code_of(client.encrypt, KeyId=elsewhere, Plaintext=b"x") == "NotFoundException"
    # Operations AWS does not allow across accounts do not find the key by alias ARN either.
    assert code_of(client.list_aliases, KeyId=shared["KeyMetadata"]["Arn"]) == "NotFoundException"


def test_secrets_and_parameters_encrypted_under_another_accounts_key(
    server: KhoaServer, kms: Any, account_b: Caller
) -> None:
    """Secrets Manager's KmsKeyId and Parameter Store's KeyId take another account's key by key ARN
    or alias ARN ("to use a KMS key in a different account, use the key ARN or the alias ARN"), as far
    as that key's policy and the caller's IAM policies allow it."""
    user = new_user(server, account_b.client("iam"), allow(["secretsmanager:*", "ssm:*", "kms:*"]))
    secrets, parameters = user.client("secretsmanager"), user.client("ssm")
    shared = kms.create_key(
        Policy=key_policy(grant_to(ROOT_ARN, "kms:*"), grant_to(account_b.arn, USER_ACTIONS))
    )["KeyMetadata"]
    private = kms.create_key()["KeyMetadata"]
    alias = unique("alias/for-b")
    kms.create_alias(AliasName=alias, TargetKeyId=shared["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"

    by_key, by_alias = unique("b/by-key"), unique("b/by-alias")
    secrets.create_secret(Name=by_key, SecretString="one", KmsKeyId=shared["Arn"])
    secrets.create_secret(Name=by_alias, SecretString="two", KmsKeyId=alias_arn)
    assert secrets.get_secret_value(SecretId=by_key)["SecretString"] == "one"
    assert secrets.get_secret_value(SecretId=by_alias)["SecretString"] == "two"
    assert secrets.describe_secret(SecretId=by_key)["KmsKeyId"] == shared["Arn"]
    name = unique("/b/param")
    parameters.put_parameter(Name=name, Value="three", Type="SecureString", KeyId=shared["Arn"])
    assert parameters.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "three"

    # A key whose policy does not name account B: refused, and nothing is stored.
    refused_name = unique("b/refused")
    assert refused(secrets.create_secret, Name=refused_name, SecretString="x", KmsKeyId=private["Arn"])[
        0
    ] == ("AccessDeniedException")
    assert code_of(secrets.describe_secret, SecretId=refused_name) == "ResourceNotFoundException"
    assert code_of(
        parameters.put_parameter,
        Name=unique("/b/refused"),
        Value="x",
        Type="SecureString",
        KeyId=private["Arn"],
    ) == ("AccessDeniedException")
    # A's side decides later too: disabling the key makes B's secret unreadable.
    kms.disable_key(KeyId=shared["KeyId"])
    try:
        assert code_of(secrets.get_secret_value, SecretId=by_key) == "DecryptionFailure"
    finally:
        kms.enable_key(KeyId=shared["KeyId"])
