"""Identity-based policies enforced end to end: IAM users signing real requests to KMS, Secrets Manager,
Parameter Store and IAM, with AWS's error codes and AccessDenied messages.

Covers: no policy denies; an exact allow allows exactly that; explicit Deny wins; wildcards;
NotAction / NotResource; policy variables; managed policy versions; groups; permissions boundaries;
inactive and deleted access keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.errors import code_of, refused
from tests.support.iam import allow, deny, document
from tests.support.identity import Caller, eventually, explicit, implicit, new_user, parameter_arn, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

SECRETS = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:"


def _secret(sm: Any, name: str = "", **kwargs: Any) -> str:
    return str(sm.create_secret(Name=name or unique("secret"), SecretString="value", **kwargs)["ARN"])


def _parameter(ssm: Any, name: str = "") -> str:
    name = name or f"/identity/{unique('p')}"
    ssm.put_parameter(Name=name, Value="value", Type="String", Overwrite=True)
    return name


# -- no policy: denied everywhere ------------------------------------------------------------------


def test_a_user_without_policies_is_denied_everywhere(
    server: KhoaServer, iam: Any, kms: Any, sm: Any, ssm: Any
) -> None:
    user = new_user(server, iam)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    secret = _secret(sm)
    parameter = _parameter(ssm)

    assert refused(user.client("kms").encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key),
    )
    assert refused(user.client("secretsmanager").get_secret_value, SecretId=secret) == (
        "AccessDeniedException",
        implicit(user.arn, "secretsmanager:GetSecretValue", secret),
    )
    assert refused(user.client("ssm").get_parameter, Name=parameter) == (
        "AccessDeniedException",
        implicit(user.arn, "ssm:GetParameter", parameter_arn(parameter)),
    )
    with pytest.raises(Exception) as excinfo:
        user.client("iam").list_users()
    response = excinfo.value.response  # type: ignore[attr-defined]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "AccessDenied"
    assert response["Error"]["Message"] == implicit(
        user.arn, "iam:ListUsers", f"arn:aws:iam::{ACCOUNT_ID}:user/"
    )
    # Knowing who you are needs no permission.
    assert user.client("sts").get_caller_identity()["Arn"] == user.arn


# -- an exact allow allows exactly that ------------------------------------------------------------


@dataclass
class Exact:
    """One action on one resource, with a neighbouring action and a neighbouring resource."""

    action: str
    resource: str
    call: Callable[[], Any]
    other_action: str
    other_action_call: Callable[[], Any]
    other_resource: str
    other_resource_call: Callable[[], Any]


def _kms_case(user: Caller, kms: Any, sm: Any, ssm: Any, iam: Any) -> Exact:
    one, two = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    client = user.client("kms")
    return Exact(
        "kms:Encrypt",
        one,
        lambda: client.encrypt(KeyId=one, Plaintext=b"x"),
        "kms:DescribeKey",
        lambda: client.describe_key(KeyId=one),
        two,
        lambda: client.encrypt(KeyId=two, Plaintext=b"x"),
    )


def _secrets_case(user: Caller, kms: Any, sm: Any, ssm: Any, iam: Any) -> Exact:
    one, two = _secret(sm), _secret(sm)
    client = user.client("secretsmanager")
    return Exact(
        "secretsmanager:GetSecretValue",
        one,
        lambda: client.get_secret_value(SecretId=one),
        "secretsmanager:DescribeSecret",
        lambda: client.describe_secret(SecretId=one),
        two,
        lambda: client.get_secret_value(SecretId=two),
    )


def _ssm_case(user: Caller, kms: Any, sm: Any, ssm: Any, iam: Any) -> Exact:
    one, two = _parameter(ssm), _parameter(ssm)
    client = user.client("ssm")
    return Exact(
        "ssm:GetParameter",
        parameter_arn(one),
        lambda: client.get_parameter(Name=one),
        "ssm:GetParameterHistory",
        lambda: client.get_parameter_history(Name=one),
        parameter_arn(two),
        lambda: client.get_parameter(Name=two),
    )


def _iam_case(user: Caller, kms: Any, sm: Any, ssm: Any, iam: Any) -> Exact:
    one, two = unique("target"), unique("target")
    arns = [iam.create_user(UserName=name)["User"]["Arn"] for name in (one, two)]
    client = user.client("iam")
    return Exact(
        "iam:GetUser",
        arns[0],
        lambda: client.get_user(UserName=one),
        "iam:ListUserTags",
        lambda: client.list_user_tags(UserName=one),
        arns[1],
        lambda: client.get_user(UserName=two),
    )


@pytest.mark.parametrize(
    "make", [_kms_case, _secrets_case, _ssm_case, _iam_case], ids=["kms", "sm", "ssm", "iam"]
)
def test_an_exact_allow_allows_that_action_on_that_resource_only(
    server: KhoaServer, iam: Any, kms: Any, sm: Any, ssm: Any, make: Callable[..., Exact]
) -> None:
    user = new_user(server, iam)
    case = make(user, kms, sm, ssm, iam)
    denied = "AccessDenied" if case.action.startswith("iam:") else "AccessDeniedException"
    assert code_of(case.call) == denied
    iam.put_user_policy(
        UserName=user.name, PolicyName="exact", PolicyDocument=document(allow(case.action, case.resource))
    )
    case.call()
    assert refused(case.other_action_call) == (
        denied,
        implicit(user.arn, case.other_action, case.resource),
    )
    assert refused(case.other_resource_call) == (denied, implicit(user.arn, case.action, case.other_resource))
    iam.delete_user_policy(UserName=user.name, PolicyName="exact")
    assert code_of(case.call) == denied


# -- explicit deny -------------------------------------------------------------------------------


def test_an_explicit_deny_wins_over_any_allow(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(server, iam, allow("kms:*"), allow("kms:Encrypt", key))
    client = user.client("kms")
    client.encrypt(KeyId=key, Plaintext=b"x")

    # A Deny in a group's managed policy beats the user's own inline Allows.
    group = unique("group")
    iam.create_group(GroupName=group)
    iam.add_user_to_group(GroupName=group, UserName=user.name)
    policy = iam.create_policy(PolicyName=unique("deny"), PolicyDocument=document(deny("kms:Encrypt", key)))
    iam.attach_group_policy(GroupName=group, PolicyArn=policy["Policy"]["Arn"])
    assert refused(client.encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        explicit(user.arn, "kms:Encrypt", key),
    )
    client.describe_key(KeyId=key)  # only what is denied is denied

    # Even the key policy allowing the user by name does not override the Deny.
    kms.put_key_policy(
        KeyId=key,
        PolicyName="default",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:root", user.arn]},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    assert refused(client.encrypt, KeyId=key, Plaintext=b"x")[1] == explicit(user.arn, "kms:Encrypt", key)
    iam.detach_group_policy(GroupName=group, PolicyArn=policy["Policy"]["Arn"])
    client.encrypt(KeyId=key, Plaintext=b"x")


def test_a_deny_with_a_condition_applies_only_when_it_holds(server: KhoaServer, iam: Any, sm: Any) -> None:
    tagged = _secret(sm, Tags=[{"Key": "classification", "Value": "restricted"}])
    plain = _secret(sm)
    user = new_user(
        server,
        iam,
        allow("secretsmanager:GetSecretValue"),
        deny(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"secretsmanager:ResourceTag/classification": "restricted"}},
        ),
    )
    client = user.client("secretsmanager")
    client.get_secret_value(SecretId=plain)
    assert refused(client.get_secret_value, SecretId=tagged) == (
        "AccessDeniedException",
        explicit(user.arn, "secretsmanager:GetSecretValue", tagged),
    )


# -- wildcards, NotAction, NotResource --------------------------------------------------------------


def test_wildcards_in_actions_and_resources(server: KhoaServer, iam: Any, sm: Any, ssm: Any) -> None:
    prefix = unique("app")
    in_app = _secret(sm, f"{prefix}/db")
    in_app_2 = _secret(sm, f"{prefix}/db2")
    elsewhere = _secret(sm, f"other-{prefix}/db")
    parameter = _parameter(ssm)
    user = new_user(
        server,
        iam,
        allow("secretsmanager:Get*", f"{SECRETS}{prefix}/*"),
        allow("secretsmanager:Describe*", f"{SECRETS}{prefix}/db-??????"),
        allow("ssm:GetParamete?", "*"),
    )
    sm_client, ssm_client = user.client("secretsmanager"), user.client("ssm")
    sm_client.get_secret_value(SecretId=in_app)
    sm_client.get_secret_value(SecretId=in_app_2)
    assert code_of(sm_client.get_secret_value, SecretId=elsewhere) == "AccessDeniedException"
    # "db-??????": the name db plus its six-character suffix, not db2.
    sm_client.describe_secret(SecretId=in_app)
    assert refused(sm_client.describe_secret, SecretId=in_app_2)[1] == implicit(
        user.arn, "secretsmanager:DescribeSecret", in_app_2
    )
    # "?" is exactly one character: GetParameter, not GetParameters.
    ssm_client.get_parameter(Name=parameter)
    assert refused(ssm_client.get_parameters, Names=[parameter])[1] == implicit(
        user.arn, "ssm:GetParameters", parameter_arn(parameter)
    )
    # Actions match case-insensitively ("secretsmanager:get*" is the same action pattern).
    iam.put_user_policy(
        UserName=user.name,
        PolicyName="inline",
        PolicyDocument=document(allow("SecretsManager:getsecretVALUE", f"{SECRETS}{prefix}/*")),
    )
    sm_client.get_secret_value(SecretId=in_app)


def test_not_action(server: KhoaServer, iam: Any, kms: Any, ssm: Any) -> None:
    parameter = _parameter(ssm)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(server, iam, {"Effect": "Allow", "NotAction": ["kms:*", "iam:*"], "Resource": "*"})
    user.client("ssm").get_parameter(Name=parameter)
    assert refused(user.client("kms").encrypt, KeyId=key, Plaintext=b"x") == (
        "AccessDeniedException",
        implicit(user.arn, "kms:Encrypt", key),
    )
    assert code_of(user.client("iam").list_users) == "AccessDenied"
    # Deny + NotAction: everything but the listed actions is denied.
    iam.put_user_policy(
        UserName=user.name,
        PolicyName="only-reads",
        PolicyDocument=document({"Effect": "Deny", "NotAction": "ssm:GetParameter", "Resource": "*"}),
    )
    user.client("ssm").get_parameter(Name=parameter)
    assert refused(user.client("ssm").get_parameter_history, Name=parameter)[1] == explicit(
        user.arn, "ssm:GetParameterHistory", parameter_arn(parameter)
    )


def test_not_resource(server: KhoaServer, iam: Any, ssm: Any) -> None:
    base = f"/identity/{unique('nr')}"
    private = _parameter(ssm, f"{base}/private/key")
    public = _parameter(ssm, f"{base}/public/key")
    user = new_user(
        server,
        iam,
        {"Effect": "Allow", "Action": "ssm:GetParameter", "NotResource": parameter_arn(f"{base}/private/*")},
    )
    client = user.client("ssm")
    client.get_parameter(Name=public)
    assert refused(client.get_parameter, Name=private)[1] == implicit(
        user.arn, "ssm:GetParameter", parameter_arn(private)
    )
    # Allow everything, Deny everything outside one path.
    iam.put_user_policy(
        UserName=user.name,
        PolicyName="inline",
        PolicyDocument=document(
            allow("ssm:*"),
            {"Effect": "Deny", "Action": "ssm:*", "NotResource": parameter_arn(f"{base}/private/*")},
        ),
    )
    client.get_parameter(Name=private)
    assert refused(client.get_parameter, Name=public)[1] == explicit(
        user.arn, "ssm:GetParameter", parameter_arn(public)
    )


# -- policy variables ---------------------------------------------------------------------------


def test_username_variable_in_a_parameter_path(server: KhoaServer, iam: Any, ssm: Any) -> None:
    """One shared group policy gives each member its own home: /home/${aws:username}/*."""
    group = unique("homes")
    iam.create_group(GroupName=group)
    iam.put_group_policy(
        GroupName=group,
        PolicyName="home",
        PolicyDocument=document(
            allow(
                ["ssm:GetParameter", "ssm:PutParameter"],
                f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/home/${{aws:username}}/*",
            )
        ),
    )
    alice, bob = new_user(server, iam), new_user(server, iam)
    for user in (alice, bob):
        iam.add_user_to_group(GroupName=group, UserName=user.name)
    alice_param = _parameter(ssm, f"/home/{alice.name}/token")
    bob_param = _parameter(ssm, f"/home/{bob.name}/token")

    alice.client("ssm").get_parameter(Name=alice_param)
    bob.client("ssm").get_parameter(Name=bob_param)
    bob.client("ssm").put_parameter(Name=f"/home/{bob.name}/new", Value="v", Type="String")
    assert refused(alice.client("ssm").get_parameter, Name=bob_param) == (
        "AccessDeniedException",
        implicit(alice.arn, "ssm:GetParameter", parameter_arn(bob_param)),
    )
    # The variable is not a wildcard: a literal "${aws:username}" path is not everyone's.
    assert code_of(alice.client("ssm").get_parameter, Name="/home/x/token") == "AccessDeniedException"


def test_principal_tag_variable_and_attribute_based_access(server: KhoaServer, iam: Any, sm: Any) -> None:
    prefix = unique("abac")
    blue = _secret(sm, f"{prefix}/blue/db", Tags=[{"Key": "team", "Value": "blue"}])
    red = _secret(sm, f"{prefix}/red/db", Tags=[{"Key": "team", "Value": "red"}])
    user = new_user(
        server,
        iam,
        allow("secretsmanager:GetSecretValue", f"{SECRETS}{prefix}/${{aws:PrincipalTag/team}}/*"),
        allow(
            "secretsmanager:DescribeSecret",
            "*",
            Condition={"StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}},
        ),
        tags={"team": "blue"},
    )
    client = user.client("secretsmanager")
    client.get_secret_value(SecretId=blue)
    client.describe_secret(SecretId=blue)
    assert refused(client.get_secret_value, SecretId=red)[1] == implicit(
        user.arn, "secretsmanager:GetSecretValue", red
    )
    assert code_of(client.describe_secret, SecretId=red) == "AccessDeniedException"

    iam.tag_user(UserName=user.name, Tags=[{"Key": "team", "Value": "red"}])
    client.get_secret_value(SecretId=red)
    client.describe_secret(SecretId=red)
    assert code_of(client.get_secret_value, SecretId=blue) == "AccessDeniedException"

    # Without the tag the variable resolves to nothing and the statement matches nothing.
    iam.untag_user(UserName=user.name, TagKeys=["team"])
    assert code_of(client.get_secret_value, SecretId=red) == "AccessDeniedException"
    assert code_of(client.describe_secret, SecretId=red) == "AccessDeniedException"


# -- managed policies, versions and groups -------------------------------------------------------------


def test_the_default_version_of_a_managed_policy_decides(server: KhoaServer, iam: Any, sm: Any) -> None:
    first, second = _secret(sm), _secret(sm)
    user = new_user(server, iam)
    client = user.client("secretsmanager")
    arn = iam.create_policy(
        PolicyName=unique("readers"), PolicyDocument=document(allow("secretsmanager:GetSecretValue", first))
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName=user.name, PolicyArn=arn)
    client.get_secret_value(SecretId=first)
    assert code_of(client.get_secret_value, SecretId=second) == "AccessDeniedException"

    # A new version that is not the default changes nothing.
    created = iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=document(allow("secretsmanager:GetSecretValue", second))
    )["PolicyVersion"]
    assert (created["VersionId"], created["IsDefaultVersion"]) == ("v2", False)
    client.get_secret_value(SecretId=first)
    assert code_of(client.get_secret_value, SecretId=second) == "AccessDeniedException"

    iam.set_default_policy_version(PolicyArn=arn, VersionId="v2")
    client.get_secret_value(SecretId=second)
    assert refused(client.get_secret_value, SecretId=first)[1] == implicit(
        user.arn, "secretsmanager:GetSecretValue", first
    )

    # Back to v1; then a third version made default at creation.
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    client.get_secret_value(SecretId=first)
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=document(deny("secretsmanager:*")), SetAsDefault=True
    )
    assert refused(client.get_secret_value, SecretId=first)[1] == explicit(
        user.arn, "secretsmanager:GetSecretValue", first
    )
    iam.detach_user_policy(UserName=user.name, PolicyArn=arn)
    assert refused(client.get_secret_value, SecretId=first)[1] == implicit(
        user.arn, "secretsmanager:GetSecretValue", first
    )


def test_groups_grant_through_inline_and_managed_policies(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(server, iam)
    client = user.client("kms")
    inline_group, managed_group = unique("g-inline"), unique("g-managed")
    iam.create_group(GroupName=inline_group)
    iam.create_group(GroupName=managed_group)
    iam.put_group_policy(
        GroupName=inline_group, PolicyName="encrypt", PolicyDocument=document(allow("kms:Encrypt", key))
    )
    arn = iam.create_policy(PolicyName=unique("describe"), PolicyDocument=document(allow("kms:DescribeKey")))[
        "Policy"
    ]["Arn"]
    iam.attach_group_policy(GroupName=managed_group, PolicyArn=arn)

    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
    assert code_of(client.describe_key, KeyId=key) == "AccessDeniedException"
    iam.add_user_to_group(GroupName=inline_group, UserName=user.name)
    iam.add_user_to_group(GroupName=managed_group, UserName=user.name)
    client.encrypt(KeyId=key, Plaintext=b"x")
    client.describe_key(KeyId=key)
    iam.remove_user_from_group(GroupName=managed_group, UserName=user.name)
    client.encrypt(KeyId=key, Plaintext=b"x")
    assert refused(client.describe_key, KeyId=key)[1] == implicit(user.arn, "kms:DescribeKey", key)


# -- permissions boundaries -------------------------------------------------------------------------


def test_a_permissions_boundary_intersects_with_identity_policies(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    first, second = _secret(sm), _secret(sm)
    boundary = iam.create_policy(
        PolicyName=unique("boundary"),
        PolicyDocument=document(
            allow(["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], first),
            allow("secretsmanager:ListSecrets"),
            deny("secretsmanager:ListSecrets", Condition={"Bool": {"aws:SecureTransport": "false"}}),
        ),
    )["Policy"]["Arn"]
    user = new_user(server, iam, allow("secretsmanager:GetSecretValue"))
    client = user.client("secretsmanager")
    client.get_secret_value(SecretId=second)
    iam.put_user_permissions_boundary(UserName=user.name, PermissionsBoundary=boundary)

    # Allowed by both: allowed.
    client.get_secret_value(SecretId=first)
    # Allowed by the identity policy only: denied by the boundary.
    assert refused(client.get_secret_value, SecretId=second) == (
        "AccessDeniedException",
        implicit(user.arn, "secretsmanager:GetSecretValue", second, "permissions boundary"),
    )
    # Allowed by the boundary only: a boundary grants nothing by itself.
    assert refused(client.describe_secret, SecretId=first)[1] == implicit(
        user.arn, "secretsmanager:DescribeSecret", first
    )
    # A Deny in the boundary is an explicit deny (requests here are plain HTTP).
    iam.put_user_policy(
        UserName=user.name, PolicyName="list", PolicyDocument=document(allow("secretsmanager:ListSecrets"))
    )
    assert refused(client.list_secrets)[1] == explicit(
        user.arn, "secretsmanager:ListSecrets", "*", "a permissions boundary"
    )
    iam.delete_user_permissions_boundary(UserName=user.name)
    client.get_secret_value(SecretId=second)
    client.list_secrets()


def test_a_role_boundary_limits_its_sessions(server: KhoaServer, iam: Any, ssm: Any) -> None:
    allowed, other = _parameter(ssm), _parameter(ssm)
    boundary = iam.create_policy(
        PolicyName=unique("role-boundary"),
        PolicyDocument=document(allow("ssm:GetParameter", parameter_arn(allowed))),
    )["Policy"]["Arn"]
    role = unique("bounded")
    arn = iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID}, "Action": "sts:AssumeRole"}
        ),
        PermissionsBoundary=boundary,
    )["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="all", PolicyDocument=document(allow("ssm:*")))
    caller = new_user(server, iam, allow("sts:AssumeRole", arn))
    client = session(caller, arn, "bounded").client("ssm")
    client.get_parameter(Name=allowed)
    assert refused(client.get_parameter, Name=other)[1] == implicit(
        f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/bounded",
        "ssm:GetParameter",
        parameter_arn(other),
        "permissions boundary",
    )


# -- access keys ------------------------------------------------------------------------------------


def test_inactive_and_deleted_access_keys_stop_working(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow("kms:ListKeys"), allow("iam:ListUsers"))
    kms_client, iam_client = user.client("kms"), user.client("iam")
    kms_client.list_keys()
    iam_client.list_users()

    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Inactive")
    took = eventually(lambda: code_of(kms_client.list_keys) == "UnrecognizedClientException")
    assert took < 6
    assert refused(kms_client.list_keys) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    assert refused(iam_client.list_users)[0] == "InvalidClientTokenId"

    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Active")
    eventually(lambda: code_of(kms_client.list_keys) == "ok")

    # A second key keeps working when the first is deleted.
    second = iam.create_access_key(UserName=user.name)["AccessKey"]
    iam.delete_access_key(UserName=user.name, AccessKeyId=user.access_key_id)
    eventually(lambda: code_of(kms_client.list_keys) == "UnrecognizedClientException")
    other = server.client(
        "kms", aws_access_key_id=second["AccessKeyId"], aws_secret_access_key=second["SecretAccessKey"]
    )
    other.list_keys()


def test_a_deleted_user_policy_and_a_deleted_user_take_effect(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow("kms:ListKeys"))
    client = user.client("kms")
    client.list_keys()
    iam.delete_user_policy(UserName=user.name, PolicyName="inline")
    assert refused(client.list_keys)[1] == implicit(user.arn, "kms:ListKeys", "*")
    iam.delete_access_key(UserName=user.name, AccessKeyId=user.access_key_id)
    iam.delete_user(UserName=user.name)
    # Recreating a user with the same name does not revive the old key.
    iam.create_user(UserName=user.name)
    iam.put_user_policy(UserName=user.name, PolicyName="p", PolicyDocument=document(allow("kms:ListKeys")))
    assert code_of(client.list_keys) == "UnrecognizedClientException"
