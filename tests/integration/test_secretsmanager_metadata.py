"""Secrets Manager metadata through boto3 against a real server: UpdateSecret (description, KMS key
change with re-encryption), DescribeSecret's fields, TagResource / UntagResource, and KMS key state
deciding whether a value can be read or written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.server import KhoaServer


def key_arns(sm: Any, name: str) -> dict[str, list[str]]:
    versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    return {v["VersionId"]: v["KmsKeyIds"] for v in versions}


def test_describe_secret_fields(sm: Any) -> None:
    name = secret_name("meta")
    before = datetime.now(UTC) - timedelta(seconds=5)
    created = sm.create_secret(
        Name=name, SecretString="v", Description="the description", Tags=[{"Key": "k", "Value": "v"}]
    )
    described = sm.describe_secret(SecretId=name)
    assert described["ARN"] == created["ARN"]
    assert described["Name"] == name
    assert described["Description"] == "the description"
    assert described["Tags"] == [{"Key": "k", "Value": "v"}]
    assert described["VersionIdsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    # PrimaryRegion is only returned for a secret with replicas (test_secretsmanager_fidelity.py)
    assert "PrimaryRegion" not in described
    assert before < described["CreatedDate"] < before + timedelta(minutes=5)
    assert described["LastChangedDate"] >= described["CreatedDate"]
    # fields without a value are left out: never rotated, never read, never deleted, default key
    for absent in (
        "RotationEnabled",
        "RotationLambdaARN",
        "RotationRules",
        "LastRotatedDate",
        "NextRotationDate",
        "LastAccessedDate",
        "DeletedDate",
        "KmsKeyId",
        "ReplicationStatus",
        "OwningService",
    ):
        assert absent not in described, absent


def test_last_changed_date_moves_on_changes_only(server: KhoaServer, sm: Any) -> None:
    name = secret_name("meta")
    sm.create_secret(Name=name, SecretString="v")
    changed = sm.describe_secret(SecretId=name)["LastChangedDate"]
    server.advance_clock(1)  # the server's test clock: a later change has a later time
    sm.get_secret_value(SecretId=name)
    assert sm.describe_secret(SecretId=name)["LastChangedDate"] == changed
    for change in (
        lambda: sm.update_secret(SecretId=name, Description="new"),
        lambda: sm.put_secret_value(SecretId=name, SecretString="w"),
        lambda: sm.tag_resource(SecretId=name, Tags=[{"Key": "a", "Value": "b"}]),
        lambda: sm.untag_resource(SecretId=name, TagKeys=["a"]),
    ):
        server.advance_clock(1)
        change()
        now = sm.describe_secret(SecretId=name)["LastChangedDate"]
        assert now > changed
        changed = now


def test_update_description_and_empty_description(sm: Any) -> None:
    name = secret_name("meta")
    arn = sm.create_secret(Name=name, SecretString="v", Description="old")["ARN"]
    result = sm.update_secret(SecretId=arn, Description="new")
    assert result == {**result, "ARN": arn, "Name": name}
    assert sm.describe_secret(SecretId=name)["Description"] == "new"
    sm.update_secret(SecretId=name, Description="")
    assert sm.describe_secret(SecretId=name).get("Description", "") == ""
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"
    assert error_code(sm.update_secret, SecretId=secret_name("missing"), Description="x") == (
        "ResourceNotFoundException"
    )


def test_changing_the_kms_key_reencrypts_current_and_previous(sm: Any, kms: Any) -> None:
    first_key = kms.create_key()["KeyMetadata"]
    second_key = kms.create_key()["KeyMetadata"]
    name = secret_name("meta")
    v1 = sm.create_secret(Name=name, SecretString="one", KmsKeyId=first_key["Arn"])["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two")["VersionId"]
    v3 = sm.put_secret_value(SecretId=name, SecretString="three")["VersionId"]  # v1 is now deprecated
    assert set(map(tuple, key_arns(sm, name).values())) == {(first_key["Arn"],)}

    sm.update_secret(SecretId=name, KmsKeyId=second_key["KeyId"])
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == second_key["KeyId"]
    arns = key_arns(sm, name)
    assert arns[v3] == [second_key["Arn"]]  # AWSCURRENT
    assert arns[v2] == [second_key["Arn"]]  # AWSPREVIOUS
    assert arns[v1] == [first_key["Arn"]]  # deprecated versions keep their key
    # the re-encrypted values still read back, and the old key is no longer needed for them
    kms.disable_key(KeyId=first_key["KeyId"])
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "three"
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "two"
    assert error_code(sm.get_secret_value, SecretId=name, VersionId=v1) == "DecryptionFailure"
    kms.enable_key(KeyId=first_key["KeyId"])
    assert sm.get_secret_value(SecretId=name, VersionId=v1)["SecretString"] == "one"

    # a new value with a key change is written under the new key; an empty KmsKeyId means aws/secretsmanager
    v4 = sm.update_secret(SecretId=name, KmsKeyId="", SecretString="four")["VersionId"]
    managed = kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]["Arn"]
    assert "KmsKeyId" not in sm.describe_secret(SecretId=name)
    arns = key_arns(sm, name)
    assert arns[v4] == [managed]
    assert arns[v3] == [managed]  # the new AWSPREVIOUS
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "four"


def test_update_with_an_unusable_key_changes_nothing(sm: Any, kms: Any) -> None:
    name = secret_name("meta")
    sm.create_secret(Name=name, SecretString="v")
    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    assert error_code(sm.update_secret, SecretId=name, KmsKeyId=disabled["KeyId"]) == "EncryptionFailure"
    assert error_code(sm.update_secret, SecretId=name, KmsKeyId=str(uuid.uuid4())) == (
        "ResourceNotFoundException"
    )
    assert "KmsKeyId" not in sm.describe_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"


def test_key_state_decides_reads_and_writes(sm: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    name = secret_name("meta")
    sm.create_secret(Name=name, SecretString="guarded", KmsKeyId=key["KeyId"])

    kms.disable_key(KeyId=key["KeyId"])
    assert error_code(sm.get_secret_value, SecretId=name) == "DecryptionFailure"
    assert error_code(sm.put_secret_value, SecretId=name, SecretString="new") == "EncryptionFailure"
    assert error_code(sm.update_secret, SecretId=name, SecretString="new") == "EncryptionFailure"
    batch = sm.batch_get_secret_value(SecretIdList=[name])
    assert batch["SecretValues"] == []
    assert batch["Errors"][0]["ErrorCode"] == "DecryptionFailure"
    # metadata stays readable
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == key["KeyId"]

    kms.enable_key(KeyId=key["KeyId"])
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "guarded"
    sm.put_secret_value(SecretId=name, SecretString="new")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "new"

    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert error_code(sm.get_secret_value, SecretId=name) == "DecryptionFailure"
    assert error_code(sm.put_secret_value, SecretId=name, SecretString="x") == "EncryptionFailure"
    kms.cancel_key_deletion(KeyId=key["KeyId"])
    kms.enable_key(KeyId=key["KeyId"])
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "new"


def test_tags(sm: Any) -> None:
    name = secret_name("meta")
    sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "a", "Value": "1"}])
    sm.tag_resource(SecretId=name, Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "overwritten"}])
    assert sm.describe_secret(SecretId=name)["Tags"] == [
        {"Key": "a", "Value": "overwritten"},
        {"Key": "b", "Value": "2"},
    ]
    # Keys are case-sensitive, but policy condition keys (aws:ResourceTag/<key>) are not: a key that
    # differs only in case from one the secret has is refused (test_secretsmanager_write_guards).
    assert error_code(sm.tag_resource, SecretId=name, Tags=[{"Key": "A", "Value": "upper"}]) == (
        "InvalidParameterException"
    )
    assert len(sm.describe_secret(SecretId=name)["Tags"]) == 2
    # removing absent keys is not an error
    sm.untag_resource(SecretId=name, TagKeys=["a", "A", "never-there"])
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "b", "Value": "2"}]
    sm.untag_resource(SecretId=name, TagKeys=["b"])
    # a secret whose tags are all gone has an empty list, as AWS answers
    assert sm.describe_secret(SecretId=name)["Tags"] == []
    assert error_code(
        sm.tag_resource, SecretId=secret_name("missing"), Tags=[{"Key": "a", "Value": "b"}]
    ) == ("ResourceNotFoundException")
    assert error_code(sm.untag_resource, SecretId=secret_name("missing"), TagKeys=["a"]) == (
        "ResourceNotFoundException"
    )
    assert error_code(sm.tag_resource, SecretId=name, Tags=[{"Key": "aws:x", "Value": "b"}]) == (
        "InvalidParameterException"
    )


def test_at_most_50_tags(sm: Any) -> None:
    name = secret_name("meta")
    sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    code = error_code(sm.tag_resource, SecretId=name, Tags=[{"Key": "one-more", "Value": "v"}])
    assert code == "InvalidRequestException"
    # overwriting an existing key is still fine
    sm.tag_resource(SecretId=name, Tags=[{"Key": "k0", "Value": "new"}])
    assert len(sm.describe_secret(SecretId=name)["Tags"]) == 50
