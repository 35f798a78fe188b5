"""Secrets Manager requests that reached past what their caller was allowed, and the rules that now hold:

- CreateSecret of an existing name compares the value sent with the stored one (the idempotent retry
  of its creator) only for a caller allowed to read or write that secret; anyone else learns nothing.
- RotateSecret's ClientRequestToken always becomes a new version: a token naming an existing version is
  refused (it would have made that version AWSPENDING and its old value AWSCURRENT again).
- ForceOverwriteReplicaSecret replaces a secret only if the caller may DeleteSecret it, and never one
  that is a replica of another primary or has replicas of its own.
- A caller of another account writes the owner's secret under the owner's key, resolved in the
  owner's account, and never under the AWS-managed key (which AWS refuses across accounts).
- Tag keys that differ only in case are refused: condition keys don't tell them apart.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.support.errors import error_code, refused
from tests.support.iam import allow, deny
from tests.support.identity import ROOT_ARN, Caller, new_user, resource_policy
from tests.support.names import secret_name, unique
from tests.support.rotation import holder, register, rotate_now, stages_of
from tests.support.server import ACCOUNT_ID, KhoaServer, fresh_region

MANAGED_ACROSS_ACCOUNTS = (
    "InvalidRequestException",
    "You can't access a secret from a different AWS account if you encrypt the secret with the default KMS "
    "service key.",
)


def _grant(principal: str, actions: list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"}


def _client_in(caller: Caller, region: str) -> Any:
    return caller.server.client(
        "secretsmanager",
        region=region,
        aws_access_key_id=caller.access_key_id,
        aws_secret_access_key=caller.secret_access_key,
    )


# -- CreateSecret of an existing name ---------------------------------------------------------------------


def test_create_secret_of_an_existing_name_tells_a_caller_who_may_not_read_it_nothing(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    name = secret_name("pin")
    created = sm.create_secret(Name=name, SecretString="4821")
    arn, version = created["ARN"], created["VersionId"]
    guesser = new_user(
        server,
        iam,
        allow(["secretsmanager:CreateSecret", "secretsmanager:ListSecrets"]),
        deny(
            [
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
                "secretsmanager:PutSecretValue",
            ],
            arn,
        ),
    )
    client = guesser.client("secretsmanager")
    exists = ("ResourceExistsException", f"The operation failed because the secret {name} already exists.")
    # The right value and a wrong one, under the AWSCURRENT version's id, answer alike.
    for guess in ("4821", "0000"):
        assert (
            refused(client.create_secret, Name=name, SecretString=guess, ClientRequestToken=version) == exists
        )

    # A caller who may read the secret retries its creation as before: the same value under the same
    # token succeeds; another value is refused naming the token.
    reader = new_user(server, iam, allow(["secretsmanager:CreateSecret", "secretsmanager:GetSecretValue"]))
    again = reader.client("secretsmanager").create_secret(
        Name=name, SecretString="4821", ClientRequestToken=version
    )
    assert (again["ARN"], again["VersionId"]) == (arn, version)
    code, message = refused(
        reader.client("secretsmanager").create_secret,
        Name=name,
        SecretString="0000",
        ClientRequestToken=version,
    )
    assert code == "ResourceExistsException"
    assert version in message
    # So does one who may write it (PutSecretValue's token makes the same comparison, as AWS documents).
    writer = new_user(
        server,
        iam,
        allow(["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue"]),
        deny("secretsmanager:GetSecretValue", arn),
    )
    repeated = writer.client("secretsmanager").create_secret(
        Name=name, SecretString="4821", ClientRequestToken=version
    )
    assert repeated["VersionId"] == version
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "4821"


# -- RotateSecret's token -----------------------------------------------------------------------------------


def test_rotate_secret_refuses_a_token_naming_an_existing_version(server: KhoaServer, sm: Any) -> None:
    function = register(server, unique("rollback"), "tests.support.rotators:simple")
    name = secret_name("rotated")
    old = sm.create_secret(Name=name, SecretString=json.dumps({"password": "leaked"}))["VersionId"]
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "second"}))
    current = sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "third"}))["VersionId"]
    assert holder(stages_of(sm, name), "AWSCURRENT") == current
    for token in (old, current):
        code, message = refused(
            sm.rotate_secret, SecretId=name, RotationLambdaARN=function, ClientRequestToken=token
        )
        assert code == "InvalidRequestException"
        assert token in message
    server.run_jobs()
    # Nothing was relabelled, queued or configured: the rotated-away value stays rotated away.
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == current
    assert holder(stages, "AWSPENDING") is None
    assert stages[old] == []
    assert json.loads(sm.get_secret_value(SecretId=name)["SecretString"])["password"] == "third"
    assert "RotationLambdaARN" not in sm.describe_secret(SecretId=name)

    # A new token rotates as before, to a new version.
    fresh = str(uuid.uuid4())
    assert rotate_now(server, sm, name, RotationLambdaARN=function, ClientRequestToken=fresh) == fresh
    assert holder(stages_of(sm, name), "AWSCURRENT") == fresh
    assert json.loads(sm.get_secret_value(SecretId=name)["SecretString"])["password"] not in (
        "leaked",
        "third",
    )


# -- ForceOverwriteReplicaSecret ------------------------------------------------------------------------


def test_force_overwrite_needs_permission_to_delete_the_secret_it_replaces(
    server: KhoaServer, iam: Any
) -> None:
    home, other_home, target = fresh_region(), fresh_region(), fresh_region()
    owner = server.client("secretsmanager", region=target)
    name = secret_name("team")
    theirs = owner.create_secret(Name=name, SecretString="theirs")["ARN"]
    user = new_user(
        server,
        iam,
        allow("secretsmanager:*"),
        deny("secretsmanager:DeleteSecret", f"arn:aws:secretsmanager:{target}:{ACCOUNT_ID}:secret:*"),
    )
    mine = _client_in(user, home)
    mine.create_secret(Name=name, SecretString="mine")
    code, message = refused(
        mine.replicate_secret_to_regions,
        SecretId=name,
        AddReplicaRegions=[{"Region": target}],
        ForceOverwriteReplicaSecret=True,
    )
    assert code == "AccessDeniedException"
    assert f"secretsmanager:DeleteSecret on resource: {theirs}" in message
    assert owner.get_secret_value(SecretId=theirs)["SecretString"] == "theirs"
    assert "ReplicationStatus" not in mine.describe_secret(SecretId=name)

    # CreateSecret with AddReplicaRegions is refused the same way, before its own secret is stored.
    elsewhere = _client_in(user, other_home)
    code, _ = refused(
        elsewhere.create_secret,
        Name=name,
        SecretString="mine",
        AddReplicaRegions=[{"Region": target}],
        ForceOverwriteReplicaSecret=True,
    )
    assert code == "AccessDeniedException"
    assert error_code(elsewhere.describe_secret, SecretId=name) == "ResourceNotFoundException"
    assert owner.get_secret_value(SecretId=theirs)["SecretString"] == "theirs"

    # A caller allowed to delete it overwrites it, as before.
    allowed = new_user(server, iam, allow("secretsmanager:*"))
    result = _client_in(allowed, home).replicate_secret_to_regions(
        SecretId=name, AddReplicaRegions=[{"Region": target}], ForceOverwriteReplicaSecret=True
    )
    assert result["ReplicationStatus"][0]["Status"] == "InSync"
    assert owner.get_secret_value(SecretId=name)["SecretString"] == "mine"


def test_force_overwrite_never_replaces_a_replicated_secret(server: KhoaServer) -> None:
    home, target, beyond = fresh_region(), fresh_region(), fresh_region()
    owner = server.client("secretsmanager", region=target)
    name = secret_name("replicated")
    theirs = owner.create_secret(Name=name, SecretString="theirs")["ARN"]
    owner.replicate_secret_to_regions(SecretId=theirs, AddReplicaRegions=[{"Region": beyond}])
    mine = server.client("secretsmanager", region=home)
    mine.create_secret(Name=name, SecretString="mine")
    # A primary with a replica of its own, and that replica (another primary's): neither is replaced.
    for region in (target, beyond):
        code, message = refused(
            mine.replicate_secret_to_regions,
            SecretId=name,
            AddReplicaRegions=[{"Region": region}],
            ForceOverwriteReplicaSecret=True,
        )
        assert code == "InvalidRequestException"
        assert name in message
    assert owner.get_secret_value(SecretId=theirs)["SecretString"] == "theirs"
    assert [s["Region"] for s in owner.describe_secret(SecretId=theirs)["ReplicationStatus"]] == [beyond]
    replica = server.client("secretsmanager", region=beyond).describe_secret(SecretId=name)
    assert replica["PrimaryRegion"] == target
    assert "ReplicationStatus" not in mine.describe_secret(SecretId=name)


# -- writes from another account ------------------------------------------------------------------------


def test_another_account_may_not_write_a_secret_under_the_aws_managed_key(
    server: KhoaServer, account_b: Caller, sm: Any
) -> None:
    writer = new_user(server, account_b.client("iam"), allow(["secretsmanager:*", "kms:*"]))
    arn = sm.create_secret(Name=secret_name("shared"), SecretString="owner's")["ARN"]
    actions = [
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecret",
        "secretsmanager:GetSecretValue",
    ]
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=resource_policy(_grant(writer.arn, actions)))
    client = writer.client("secretsmanager")
    assert refused(client.put_secret_value, SecretId=arn, SecretString="from b") == MANAGED_ACROSS_ACCOUNTS
    assert refused(client.update_secret, SecretId=arn, SecretString="from b") == MANAGED_ACROSS_ACCOUNTS
    assert refused(client.update_secret, SecretId=arn, KmsKeyId="") == MANAGED_ACROSS_ACCOUNTS
    versions = sm.list_secret_version_ids(SecretId=arn)["Versions"]
    assert len(versions) == 1
    assert all(f":{ACCOUNT_ID}:key/" in key for key in versions[0]["KmsKeyIds"])
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "owner's"


def test_another_account_writes_under_the_owners_key_whatever_aliases_it_has(
    server: KhoaServer, account_b: Caller, sm: Any, kms: Any
) -> None:
    writer = new_user(server, account_b.client("iam"), allow(["secretsmanager:*", "kms:*"]))
    alias = f"alias/{unique('shared')}"
    key_policy = resource_policy(
        _grant(ROOT_ARN, ["kms:*"]),
        _grant(writer.arn, ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"]),
    )
    owners_key = kms.create_key(Policy=key_policy)["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=owners_key)
    # The writer's account has a key under the same alias name.
    writers_kms = writer.client("kms")
    writers_key = writers_kms.create_key()["KeyMetadata"]["Arn"]
    writers_kms.create_alias(AliasName=alias, TargetKeyId=writers_key)

    arn = sm.create_secret(Name=secret_name("shared"), SecretString="owner's", KmsKeyId=alias)["ARN"]
    actions = ["secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue"]
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=resource_policy(_grant(writer.arn, actions)))
    written = writer.client("secretsmanager").put_secret_value(SecretId=arn, SecretString="from b")
    listed = {v["VersionId"]: v for v in sm.list_secret_version_ids(SecretId=arn)["Versions"]}
    assert listed[written["VersionId"]]["KmsKeyIds"] == [owners_key]
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "from b"


def test_another_accounts_write_is_refused_before_a_replica_under_the_aws_managed_key_is_reached(
    server: KhoaServer, account_b: Caller, sm: Any, kms: Any
) -> None:
    writer = new_user(server, account_b.client("iam"), allow(["secretsmanager:*", "kms:*"]))
    key_policy = resource_policy(
        _grant(ROOT_ARN, ["kms:*"]),
        _grant(writer.arn, ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"]),
    )
    owners_key = kms.create_key(Policy=key_policy)["KeyMetadata"]["Arn"]
    name = secret_name("shared")
    arn = sm.create_secret(Name=name, SecretString="owner's", KmsKeyId=owners_key)["ARN"]
    replica_region = fresh_region()
    sm.replicate_secret_to_regions(SecretId=arn, AddReplicaRegions=[{"Region": replica_region}])
    actions = ["secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue"]
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=resource_policy(_grant(writer.arn, actions)))
    client = writer.client("secretsmanager")
    assert refused(client.put_secret_value, SecretId=arn, SecretString="from b") == MANAGED_ACROSS_ACCOUNTS
    assert len(sm.list_secret_version_ids(SecretId=arn)["Versions"]) == 1
    replica = server.client("secretsmanager", region=replica_region)
    assert replica.get_secret_value(SecretId=name)["SecretString"] == "owner's"
    replica_keys = [
        k for v in replica.list_secret_version_ids(SecretId=name)["Versions"] for k in v["KmsKeyIds"]
    ]
    assert all(f":{ACCOUNT_ID}:key/" in key for key in replica_keys)


# -- tag keys differing only in case ---------------------------------------------------------------------


def test_tag_keys_differing_only_in_case_are_refused(server: KhoaServer, iam: Any, sm: Any) -> None:
    user = new_user(
        server,
        iam,
        allow("secretsmanager:*"),
        deny(
            ["secretsmanager:CreateSecret", "secretsmanager:TagResource"],
            Condition={"StringEquals": {"aws:RequestTag/env": "prod"}},
        ),
    )
    client = user.client("secretsmanager")
    name = secret_name("tagged")
    variants = [{"Key": "env", "Value": "prod"}, {"Key": "ENV", "Value": "dev"}]
    # The Deny sees both values (it no longer sees "dev" alone) ...
    assert (
        error_code(client.create_secret, Name=name, SecretString="x", Tags=variants)
        == "AccessDeniedException"
    )
    # ... and whoever is allowed is refused such tags anyway.
    code, message = refused(sm.create_secret, Name=name, SecretString="x", Tags=variants)
    assert code == "InvalidParameterException"
    assert "env" in message and "ENV" in message
    assert error_code(sm.describe_secret, SecretId=name) == "ResourceNotFoundException"
    # A key given twice is one tag with its last value, and is judged on that value.
    twice = [{"Key": "env", "Value": "dev"}, {"Key": "env", "Value": "prod"}]
    assert (
        error_code(client.create_secret, Name=name, SecretString="x", Tags=twice) == "AccessDeniedException"
    )
    twice_dev = secret_name("tagged")
    client.create_secret(Name=twice_dev, SecretString="x", Tags=list(reversed(twice)))
    assert sm.describe_secret(SecretId=twice_dev)["Tags"] == [{"Key": "env", "Value": "dev"}]

    # A tag whose key differs only in case from one the secret has: refused, the secret's tag unchanged.
    arn = sm.create_secret(
        Name=name, SecretString="top", Tags=[{"Key": "classification", "Value": "restricted"}]
    )["ARN"]
    reader = new_user(
        server,
        iam,
        allow("secretsmanager:GetSecretValue"),
        deny(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"secretsmanager:ResourceTag/classification": "restricted"}},
        ),
    )
    assert (
        error_code(reader.client("secretsmanager").get_secret_value, SecretId=arn) == "AccessDeniedException"
    )
    code, _ = refused(sm.tag_resource, SecretId=arn, Tags=[{"Key": "Classification", "Value": "public"}])
    assert code == "InvalidParameterException"
    assert sm.describe_secret(SecretId=arn)["Tags"] == [{"Key": "classification", "Value": "restricted"}]
    assert (
        error_code(reader.client("secretsmanager").get_secret_value, SecretId=arn) == "AccessDeniedException"
    )
    # The key as it is spelt is changed as before.
    sm.tag_resource(SecretId=arn, Tags=[{"Key": "classification", "Value": "internal"}])
    assert reader.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "top"
