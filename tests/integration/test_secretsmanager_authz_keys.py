"""Secrets Manager authorisation as AWS documents it, end to end through boto3 on the shared server.

- Every condition key the Service Authorization Reference ("Actions, resources, and condition keys for
  AWS Secrets Manager") lists for an operation Khoa serves is in that operation's request context, with
  the value the operation acts on when its parameter is left out (RotateImmediately true, ...).
- CreateSecret with Tags also needs secretsmanager:TagResource, with AddReplicaRegions also
  secretsmanager:ReplicateSecretToRegions; BatchGetSecretValue with Filters also needs
  secretsmanager:ListSecrets (their API references, "Required permissions").
- A replica carries its primary's resource policy, changes and deletion included ("Secrets Manager
  replicates the encrypted secret data and metadata such as tags and resource policies").
- RotateSecret refuses a rotation function of another account (Khoa has no function policies that
  could grant Secrets Manager invoke), and lambda:InvokeFunction is evaluated in the function's account.
- TagResource / UntagResource that would take the caller's own permission for them away are refused
  with AccessDenied ("If successfully completing this operation would result in you losing your
  permissions for this secret, then the operation is blocked").

Every refusal is checked to have changed nothing, and each has an allowed counterpart.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.errors import error_code, refused
from tests.support.iam import allow, deny
from tests.support.identity import Caller, new_user, resource_policy
from tests.support.names import secret_name, unique
from tests.support.server import KhoaServer, fresh_region

DENIED = "AccessDeniedException"
CANNOT_INVOKE = (
    "Secrets Manager cannot invoke the specified Lambda function. "
    "Ensure that the function policy grants access to the principal secretsmanager.amazonaws.com."
)


def in_region(server: KhoaServer, caller: Caller, region: str) -> Any:
    """A Secrets Manager client of ``region`` signed as ``caller``."""
    return server.client(
        "secretsmanager",
        region=region,
        aws_access_key_id=caller.access_key_id,
        aws_secret_access_key=caller.secret_access_key,
    )


def exists(sm: Any, secret_id: str) -> bool:
    try:
        sm.describe_secret(SecretId=secret_id)
    except sm.exceptions.ResourceNotFoundException:
        return False
    return True


def denied_for(call: Any, action: str, **kwargs: Any) -> None:
    """The call is refused with AccessDeniedException, the message naming ``action``."""
    code, message = refused(call, **kwargs)
    assert code == DENIED, message
    assert f"perform: {action} on resource" in message, message


# -- 9. replicas carry the primary's resource policy -------------------------------------------------------


def test_a_primary_policy_change_and_deletion_reach_its_replicas(server: KhoaServer, iam: Any) -> None:
    primary_region, replica_region = fresh_region(), fresh_region()
    primary = server.client("secretsmanager", region=primary_region)
    replica = server.client("secretsmanager", region=replica_region)
    contractor = new_user(server, iam)  # no identity policy: only the secret's policy lets them in
    name = secret_name("policy-sync")
    arn = primary.create_secret(Name=name, SecretString="prod-db")["ARN"]
    replica_arn = arn.replace(primary_region, replica_region)
    grant = resource_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": contractor.arn},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }
    )
    primary.put_resource_policy(SecretId=name, ResourcePolicy=grant)
    primary.replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": replica_region}])
    reader = in_region(server, contractor, replica_region)
    assert reader.get_secret_value(SecretId=replica_arn)["SecretString"] == "prod-db"

    # The grant is replaced by a Deny on the primary: the replica follows at once.
    revoke = resource_policy(
        {
            "Effect": "Deny",
            "Principal": {"AWS": contractor.arn},
            "Action": "secretsmanager:*",
            "Resource": "*",
        }
    )
    primary.put_resource_policy(SecretId=name, ResourcePolicy=revoke)
    assert replica.get_resource_policy(SecretId=name)["ResourcePolicy"] == revoke
    code, message = refused(reader.get_secret_value, SecretId=replica_arn)
    assert code == DENIED and "explicit deny in a resource-based policy" in message

    # Deleting the primary's policy deletes the replica's: nothing grants the contractor anything.
    primary.delete_resource_policy(SecretId=name)
    assert "ResourcePolicy" not in replica.get_resource_policy(SecretId=name)
    code, message = refused(reader.get_secret_value, SecretId=replica_arn)
    assert code == DENIED and "because no" in message

    # The replica still refuses a policy of its own; the primary's new grant reaches it.
    assert error_code(replica.put_resource_policy, SecretId=name, ResourcePolicy=grant) == (
        "InvalidParameterException"
    )
    primary.put_resource_policy(SecretId=name, ResourcePolicy=grant)
    assert reader.get_secret_value(SecretId=replica_arn)["SecretString"] == "prod-db"


# -- 3. condition keys ----------------------------------------------------------------------------------


def test_delete_secret_keys_force_delete_and_recovery_window(server: KhoaServer, iam: Any, sm: Any) -> None:
    user = new_user(
        server,
        iam,
        allow("secretsmanager:*"),
        deny(
            "secretsmanager:DeleteSecret",
            Condition={"Bool": {"secretsmanager:ForceDeleteWithoutRecovery": "true"}},
        ),
        deny(
            "secretsmanager:DeleteSecret",
            Condition={"NumericLessThan": {"secretsmanager:RecoveryWindowInDays": "30"}},
        ),
    )
    client = user.client("secretsmanager")
    name = secret_name("guarded-delete")
    sm.create_secret(Name=name, SecretString="v")
    denied_for(
        client.delete_secret, "secretsmanager:DeleteSecret", SecretId=name, ForceDeleteWithoutRecovery=True
    )
    denied_for(client.delete_secret, "secretsmanager:DeleteSecret", SecretId=name, RecoveryWindowInDays=7)
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)
    # Without either parameter the window is AWS's default of 30 days: allowed.
    client.delete_secret(SecretId=name)
    assert "DeletedDate" in sm.describe_secret(SecretId=name)


def test_keys_with_defaults_carry_the_default_when_the_parameter_is_left_out(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    """A Deny on the value the operation acts on by default matches the request that relies on it."""
    user = new_user(
        server,
        iam,
        allow("secretsmanager:*"),
        deny(
            "secretsmanager:DeleteSecret",
            Condition={"Bool": {"secretsmanager:ForceDeleteWithoutRecovery": "false"}},
        ),
        deny(
            "secretsmanager:PutResourcePolicy",
            Condition={"Bool": {"secretsmanager:BlockPublicPolicy": "false"}},
        ),
        deny(
            "secretsmanager:ReplicateSecretToRegions",
            Condition={"Bool": {"secretsmanager:ForceOverwriteReplicaSecret": "false"}},
        ),
    )
    client = user.client("secretsmanager")
    name = secret_name("defaults")
    sm.create_secret(Name=name, SecretString="v")
    policy = resource_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": user.arn},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }
    )
    denied_for(
        client.put_resource_policy, "secretsmanager:PutResourcePolicy", SecretId=name, ResourcePolicy=policy
    )
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=name)
    client.put_resource_policy(SecretId=name, ResourcePolicy=policy, BlockPublicPolicy=True)
    region = fresh_region()
    denied_for(
        client.replicate_secret_to_regions,
        "secretsmanager:ReplicateSecretToRegions",
        SecretId=name,
        AddReplicaRegions=[{"Region": region}],
    )
    assert "ReplicationStatus" not in sm.describe_secret(SecretId=name)
    client.replicate_secret_to_regions(
        SecretId=name, AddReplicaRegions=[{"Region": region}], ForceOverwriteReplicaSecret=True
    )
    client.remove_regions_from_replication(SecretId=name, RemoveReplicaRegions=[region])
    denied_for(client.delete_secret, "secretsmanager:DeleteSecret", SecretId=name)
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)
    client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    assert not exists(sm, name)


def test_add_replica_regions_on_replicate_and_on_create(server: KhoaServer, iam: Any, sm: Any) -> None:
    forbidden, permitted = fresh_region(), fresh_region()
    user = new_user(
        server,
        iam,
        allow("secretsmanager:*"),
        deny(
            ["secretsmanager:ReplicateSecretToRegions", "secretsmanager:CreateSecret"],
            Condition={"ForAnyValue:StringEquals": {"secretsmanager:AddReplicaRegions": [forbidden]}},
        ),
    )
    client = user.client("secretsmanager")
    name = secret_name("regions")
    sm.create_secret(Name=name, SecretString="v")
    denied_for(
        client.replicate_secret_to_regions,
        "secretsmanager:ReplicateSecretToRegions",
        SecretId=name,
        AddReplicaRegions=[{"Region": permitted}, {"Region": forbidden}],
    )
    assert "ReplicationStatus" not in sm.describe_secret(SecretId=name)
    assert not exists(server.client("secretsmanager", region=forbidden), name)
    created = secret_name("regions-create")
    denied_for(
        client.create_secret,
        "secretsmanager:CreateSecret",
        Name=created,
        SecretString="v",
        AddReplicaRegions=[{"Region": forbidden}],
    )
    assert not exists(sm, created)
    assert not exists(server.client("secretsmanager", region=forbidden), created)
    # Another Region is allowed, on both operations.
    client.replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": permitted}])
    assert (
        server.client("secretsmanager", region=permitted).get_secret_value(SecretId=name)["SecretString"]
        == "v"
    )


def test_rotate_immediately_defaults_to_true_and_modify_rotation_rules(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    function = server.register_function(unique("keys-rotator"), "tests.support.rotators:simple")
    rules = {"AutomaticallyAfterDays": 30}
    immediate = new_user(
        server,
        iam,
        allow(["secretsmanager:*", "lambda:InvokeFunction"]),
        deny("secretsmanager:RotateSecret", Condition={"Bool": {"secretsmanager:RotateImmediately": "true"}}),
    )
    name = secret_name("rotate-now")
    sm.create_secret(Name=name, SecretString=json.dumps({"password": "x"}))
    client = immediate.client("secretsmanager")
    denied_for(client.rotate_secret, "secretsmanager:RotateSecret", SecretId=name, RotationLambdaARN=function)
    assert "RotationLambdaARN" not in sm.describe_secret(SecretId=name)
    client.rotate_secret(
        SecretId=name, RotationLambdaARN=function, RotationRules=rules, RotateImmediately=False
    )
    assert sm.describe_secret(SecretId=name)["RotationLambdaARN"] == function

    no_rules = new_user(
        server,
        iam,
        allow(["secretsmanager:*", "lambda:InvokeFunction"]),
        deny(
            "secretsmanager:RotateSecret", Condition={"Bool": {"secretsmanager:ModifyRotationRules": "true"}}
        ),
    )
    other = secret_name("rotate-rules")
    sm.create_secret(Name=other, SecretString=json.dumps({"password": "x"}))
    client = no_rules.client("secretsmanager")
    denied_for(
        client.rotate_secret,
        "secretsmanager:RotateSecret",
        SecretId=other,
        RotationLambdaARN=function,
        RotationRules=rules,
        RotateImmediately=False,
    )
    assert "RotationLambdaARN" not in sm.describe_secret(SecretId=other)
    client.rotate_secret(SecretId=other, RotationLambdaARN=function, RotateImmediately=False)
    assert sm.describe_secret(SecretId=other)["RotationLambdaARN"] == function


def test_resource_keys_rotation_function_type_and_primary_region(server: KhoaServer, iam: Any) -> None:
    region, replica_region = fresh_region(), fresh_region()
    sm = server.client("secretsmanager", region=region)
    function = server.register_function(
        unique("keys-rotator"), "tests.support.rotators:simple", region=region
    )
    rotated, typed, replicated, plain = (secret_name(p) for p in ("rotated", "typed", "replicated", "plain"))
    for name in (rotated, replicated, plain):
        sm.create_secret(Name=name, SecretString=json.dumps({"password": "x"}))
    sm.create_secret(Name=typed, SecretString="v", Type="ExamplePartner")
    sm.rotate_secret(
        SecretId=rotated,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    sm.replicate_secret_to_regions(SecretId=replicated, AddReplicaRegions=[{"Region": replica_region}])
    user = new_user(
        server,
        iam,
        allow("secretsmanager:GetSecretValue"),
        deny(
            "secretsmanager:GetSecretValue",
            Condition={"ArnEquals": {"secretsmanager:resource/AllowRotationLambdaArn": function}},
        ),
        deny(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"secretsmanager:resource/Type": "ExamplePartner"}},
        ),
        deny(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"secretsmanager:SecretPrimaryRegion": region}},
        ),
    )
    client = in_region(server, user, region)
    for name in (rotated, typed, replicated):
        denied_for(client.get_secret_value, "secretsmanager:GetSecretValue", SecretId=name)
    # A replica's primary Region is its primary's.
    denied_for(
        in_region(server, user, replica_region).get_secret_value,
        "secretsmanager:GetSecretValue",
        SecretId=replicated,
    )
    assert client.get_secret_value(SecretId=plain)["SecretString"] == json.dumps({"password": "x"})


def test_request_keys_kms_key_arn_and_type(server: KhoaServer, iam: Any, kms: Any, sm: Any) -> None:
    """KmsKeyArn is the ARN of the key the request names, however it names it (an alias here)."""
    forbidden = kms.create_key()["KeyMetadata"]
    alias = f"alias/{unique('sm-keys')}"
    kms.create_alias(AliasName=alias, TargetKeyId=forbidden["KeyId"])
    user = new_user(
        server,
        iam,
        allow(["secretsmanager:*", "kms:*"]),
        deny(
            ["secretsmanager:CreateSecret", "secretsmanager:UpdateSecret"],
            Condition={"ArnEquals": {"secretsmanager:KmsKeyArn": forbidden["Arn"]}},
        ),
        deny("secretsmanager:CreateSecret", Condition={"StringEquals": {"secretsmanager:Type": "Forbidden"}}),
    )
    client = user.client("secretsmanager")
    name = secret_name("kms-arn")
    denied_for(
        client.create_secret, "secretsmanager:CreateSecret", Name=name, SecretString="v", KmsKeyId=alias
    )
    denied_for(
        client.create_secret, "secretsmanager:CreateSecret", Name=name, SecretString="v", Type="Forbidden"
    )
    assert not exists(sm, name)
    client.create_secret(Name=name, SecretString="v", Type="Allowed")
    denied_for(
        client.update_secret, "secretsmanager:UpdateSecret", SecretId=name, KmsKeyId=forbidden["KeyId"]
    )
    assert "KmsKeyId" not in sm.describe_secret(SecretId=name)
    other = kms.create_key()["KeyMetadata"]
    client.update_secret(SecretId=name, KmsKeyId=other["Arn"])
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == other["Arn"]


# -- 2. CreateSecret's extra permissions --------------------------------------------------------------


def test_create_secret_with_tags_or_replicas_needs_those_permissions(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    user = new_user(
        server,
        iam,
        allow(["secretsmanager:CreateSecret", "secretsmanager:DescribeSecret"]),
        deny(["secretsmanager:TagResource", "secretsmanager:ReplicateSecretToRegions"]),
    )
    client = user.client("secretsmanager")
    region = fresh_region()
    tagged, replicated = secret_name("create-tags"), secret_name("create-replicas")
    denied_for(
        client.create_secret,
        "secretsmanager:TagResource",
        Name=tagged,
        SecretString="v",
        Tags=[{"Key": "team", "Value": "admins"}],
    )
    denied_for(
        client.create_secret,
        "secretsmanager:ReplicateSecretToRegions",
        Name=replicated,
        SecretString="v",
        AddReplicaRegions=[{"Region": region}],
    )
    assert not exists(sm, tagged)
    assert not exists(sm, replicated)
    assert not exists(server.client("secretsmanager", region=region), replicated)
    # Without them, or with the permissions, CreateSecret works.
    client.create_secret(Name=tagged, SecretString="v")
    granted = new_user(
        server,
        iam,
        allow(
            [
                "secretsmanager:CreateSecret",
                "secretsmanager:TagResource",
                "secretsmanager:ReplicateSecretToRegions",
                "secretsmanager:DescribeSecret",
            ]
        ),
    ).client("secretsmanager")
    made = granted.create_secret(
        Name=replicated,
        SecretString="v",
        Tags=[{"Key": "team", "Value": "admins"}],
        AddReplicaRegions=[{"Region": region}],
    )
    assert [s["Region"] for s in made["ReplicationStatus"]] == [region]
    assert sm.describe_secret(SecretId=replicated)["Tags"] == [{"Key": "team", "Value": "admins"}]


def test_create_secret_request_tags_are_checked_for_tag_resource_too(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    user = new_user(
        server,
        iam,
        allow(["secretsmanager:CreateSecret", "secretsmanager:TagResource"]),
        deny("secretsmanager:TagResource", Condition={"StringEquals": {"aws:RequestTag/team": "admins"}}),
    )
    client = user.client("secretsmanager")
    name = secret_name("create-request-tag")
    denied_for(
        client.create_secret,
        "secretsmanager:TagResource",
        Name=name,
        SecretString="v",
        Tags=[{"Key": "team", "Value": "admins"}],
    )
    assert not exists(sm, name)
    client.create_secret(Name=name, SecretString="v", Tags=[{"Key": "team", "Value": "devs"}])


# -- 4. BatchGetSecretValue with Filters ------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_secrets(server: KhoaServer) -> tuple[str, list[str]]:
    """A name prefix of its own and two secrets under it: ``<prefix>/open`` and ``<prefix>/closed``."""
    sm = server.client("secretsmanager")
    prefix = unique("batch")
    arns = [sm.create_secret(Name=f"{prefix}/{n}", SecretString=n)["ARN"] for n in ("open", "closed")]
    return prefix, arns


def test_batch_get_with_filters_needs_list_secrets(
    server: KhoaServer, iam: Any, batch_secrets: tuple[str, list[str]]
) -> None:
    prefix, (open_arn, closed_arn) = batch_secrets
    reader = allow("secretsmanager:GetSecretValue", open_arn)
    user = new_user(
        server, iam, allow("secretsmanager:BatchGetSecretValue"), reader, deny("secretsmanager:ListSecrets")
    )
    client = user.client("secretsmanager")
    denied_for(
        client.batch_get_secret_value,
        "secretsmanager:ListSecrets",
        Filters=[{"Key": "name", "Values": [prefix]}],
    )
    # Naming the secrets needs no listing: each is answered for itself.
    named = client.batch_get_secret_value(SecretIdList=[open_arn, closed_arn])
    assert [v["SecretString"] for v in named["SecretValues"]] == ["open"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in named["Errors"]] == [(closed_arn, DENIED)]

    # With ListSecrets (which names every secret of the account anyway) the filter works, and a match the
    # caller may not read is reported in Errors, as AWS reports it.
    lister = new_user(
        server, iam, allow(["secretsmanager:BatchGetSecretValue", "secretsmanager:ListSecrets"]), reader
    ).client("secretsmanager")
    found = lister.batch_get_secret_value(Filters=[{"Key": "name", "Values": [prefix]}])
    assert [v["SecretString"] for v in found["SecretValues"]] == ["open"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in found["Errors"]] == [(closed_arn, DENIED)]


# -- 5. rotation functions of another account --------------------------------------------------------------


def test_rotate_secret_refuses_a_function_of_another_account(
    server: KhoaServer, iam: Any, sm: Any, account_b: Caller
) -> None:
    theirs = server.register_function(
        unique("b-rotator"), "tests.support.rotators:simple", account=account_b.account_id
    )
    ours = server.register_function(unique("a-rotator"), "tests.support.rotators:simple")
    arn = sm.create_secret(Name=secret_name("cross-fn"), SecretString=json.dumps({"password": "old"}))["ARN"]
    user = new_user(server, iam, allow(["secretsmanager:*", "lambda:InvokeFunction"]))
    client = user.client("secretsmanager")
    assert refused(client.rotate_secret, SecretId=arn, RotationLambdaARN=theirs) == (DENIED, CANNOT_INVOKE)
    # The account root is refused alike; nothing was configured or rotated.
    assert refused(sm.rotate_secret, SecretId=arn, RotationLambdaARN=theirs) == (DENIED, CANNOT_INVOKE)
    described = sm.describe_secret(SecretId=arn)
    assert "RotationLambdaARN" not in described and "LastRotatedDate" not in described
    assert len(sm.list_secret_version_ids(SecretId=arn)["Versions"]) == 1
    # The secret's own account's function is accepted.
    client.rotate_secret(
        SecretId=arn,
        RotationLambdaARN=ours,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    assert sm.describe_secret(SecretId=arn)["RotationLambdaARN"] == ours


def test_invoke_permission_is_evaluated_in_the_functions_account(
    server: KhoaServer, sm: Any, account_b: Caller
) -> None:
    """A caller of account B, let in by A's secret policy, neither borrows A's function on B's own
    policies nor brings B's function to A's secret."""
    ours = server.register_function(unique("a-rotator"), "tests.support.rotators:simple")
    theirs = server.register_function(
        unique("b-rotator"), "tests.support.rotators:simple", account=account_b.account_id
    )
    b_user = new_user(server, account_b.client("iam"), allow(["secretsmanager:*", "lambda:*"]))
    arn = sm.create_secret(Name=secret_name("cross-caller"), SecretString=json.dumps({"password": "old"}))[
        "ARN"
    ]
    sm.put_resource_policy(
        SecretId=arn,
        ResourcePolicy=resource_policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": b_user.arn},
                "Action": "secretsmanager:*",
                "Resource": "*",
            }
        ),
    )
    client = b_user.client("secretsmanager")
    assert client.describe_secret(SecretId=arn)["ARN"] == arn  # the secret policy lets B's user in
    code, message = refused(
        client.rotate_secret, SecretId=arn, RotationLambdaARN=ours, RotateImmediately=False
    )
    assert code == DENIED and f"lambda:InvokeFunction on resource: {ours}" in message
    assert refused(client.rotate_secret, SecretId=arn, RotationLambdaARN=theirs, RotateImmediately=False) == (
        DENIED,
        CANNOT_INVOKE,
    )
    assert "RotationLambdaARN" not in sm.describe_secret(SecretId=arn)


# -- 6. a tag change that would lock its author out ---------------------------------------------------------


def test_tag_changes_that_would_lock_the_caller_out_are_refused(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    name = secret_name("abac")
    sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "team", "Value": "blue"}])
    user = new_user(
        server, iam, allow("secretsmanager:*", Condition={"StringEquals": {"aws:ResourceTag/team": "blue"}})
    )
    client = user.client("secretsmanager")
    denied_for(client.untag_resource, "secretsmanager:UntagResource", SecretId=name, TagKeys=["team"])
    denied_for(
        client.tag_resource,
        "secretsmanager:TagResource",
        SecretId=name,
        Tags=[{"Key": "team", "Value": "green"}],
    )
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "team", "Value": "blue"}]
    assert client.get_secret_value(SecretId=name)["SecretString"] == "v"
    # Changes that leave the caller their permission go through.
    client.tag_resource(SecretId=name, Tags=[{"Key": "team", "Value": "blue"}, {"Key": "cost", "Value": "1"}])
    client.untag_resource(SecretId=name, TagKeys=["cost"])
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "team", "Value": "blue"}]


def test_only_the_tag_operations_own_permission_is_rechecked(server: KhoaServer, iam: Any, sm: Any) -> None:
    """A caller whose tagging permission does not hang on the tag may remove it, even though that ends
    their tag-conditioned read: the re-check is of the operation's own permission."""
    name = secret_name("abac-read")
    sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "team", "Value": "blue"}])
    user = new_user(
        server,
        iam,
        allow(["secretsmanager:TagResource", "secretsmanager:UntagResource"]),
        allow("secretsmanager:GetSecretValue", Condition={"StringEquals": {"aws:ResourceTag/team": "blue"}}),
    )
    client = user.client("secretsmanager")
    assert client.get_secret_value(SecretId=name)["SecretString"] == "v"
    client.untag_resource(SecretId=name, TagKeys=["team"])
    assert sm.describe_secret(SecretId=name)["Tags"] == []
    assert error_code(client.get_secret_value, SecretId=name) == DENIED
