"""Key tags (TagResource, UntagResource, ListResourceTags) and key policies through boto3."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.iam import allow, deny, trust
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def all_tags(kms: Any, key_id: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for page in kms.get_paginator("list_resource_tags").paginate(KeyId=key_id):
        tags.update({t["TagKey"]: t["TagValue"] for t in page["Tags"]})
    return tags


# -- tags -----------------------------------------------------------------------------------------


def test_tags_at_creation_and_overwrite(kms: Any) -> None:
    key = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "payments"}])["KeyMetadata"]
    assert kms.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]

    kms.tag_resource(
        KeyId=key["Arn"],
        Tags=[{"TagKey": "team", "TagValue": "ledger"}, {"TagKey": "env", "TagValue": ""}],
    )
    assert all_tags(kms, key["KeyId"]) == {"team": "ledger", "env": ""}

    # Tag keys are case-sensitive ("Team" is not "team"), so untagging "Team" leaves "team"; a key that
    # differs from another only in case is refused (see test_tag_keys_differing_only_in_case_are_refused).
    kms.untag_resource(KeyId=key["KeyId"], TagKeys=["Team", "env", "never-set"])
    assert all_tags(kms, key["KeyId"]) == {"team": "ledger"}


def test_list_resource_tags_paging(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    expected = {f"k{i:02d}": f"v{i}" for i in range(7)}
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": k, "TagValue": v} for k, v in expected.items()])

    seen: dict[str, str] = {}
    marker = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"KeyId": key["KeyId"], "Limit": 3}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_resource_tags(**kwargs)
        pages += 1
        assert len(page["Tags"]) <= 3
        seen.update({t["TagKey"]: t["TagValue"] for t in page["Tags"]})
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert pages == 3
    assert seen == expected
    assert all_tags(kms, key["KeyId"]) == expected
    assert error_code(kms.list_resource_tags, KeyId=key["KeyId"], Marker="bogus!") == "InvalidMarkerException"


@pytest.mark.parametrize("reserved", ["aws:owner", "AWS:owner", "Aws:x"])
def test_aws_prefix_is_reserved(kms: Any, reserved: str) -> None:
    key = kms.create_key()["KeyMetadata"]
    tags = [{"TagKey": reserved, "TagValue": "v"}]
    assert error_code(kms.tag_resource, KeyId=key["KeyId"], Tags=tags) == "TagException"
    assert all_tags(kms, key["KeyId"]) == {}
    assert error_code(kms.create_key, Tags=tags) == "TagException"


def test_tag_limit(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": f"t{i}", "TagValue": "v"} for i in range(50)])
    assert len(all_tags(kms, key["KeyId"])) == 50
    # Overwriting an existing tag does not count against the limit; a 51st tag does.
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "t0", "TagValue": "new"}])
    assert error_code(kms.tag_resource, KeyId=key["KeyId"], Tags=[{"TagKey": "t50", "TagValue": "v"}]) in (
        "TagException",
        "LimitExceededException",
    )
    tags = all_tags(kms, key["KeyId"])
    assert len(tags) == 50 and tags["t0"] == "new"


def test_tag_errors(kms: Any) -> None:
    missing = str(uuid.uuid4())
    assert error_code(kms.tag_resource, KeyId=missing, Tags=[{"TagKey": "a", "TagValue": "b"}]) == (
        "NotFoundException"
    )
    assert error_code(kms.list_resource_tags, KeyId=missing) == "NotFoundException"
    assert error_code(kms.untag_resource, KeyId=missing, TagKeys=["a"]) == "NotFoundException"

    key = kms.create_key(Tags=[{"TagKey": "a", "TagValue": "b"}])["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/tags-{uuid.uuid4().hex[:8]}", TargetKeyId=key["KeyId"])
    too_long = "x" * 129
    assert error_code(kms.tag_resource, KeyId=key["KeyId"], Tags=[{"TagKey": too_long, "TagValue": "v"}]) == (
        "ValidationException"
    )

    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert error_code(kms.tag_resource, KeyId=key["KeyId"], Tags=[{"TagKey": "c", "TagValue": "d"}]) == (
        "KMSInvalidStateException"
    )
    assert error_code(kms.untag_resource, KeyId=key["KeyId"], TagKeys=["a"]) == "KMSInvalidStateException"
    # Reading tags of a key pending deletion is allowed.
    assert all_tags(kms, key["KeyId"]) == {"a": "b"}


def test_tag_keys_differing_only_in_case_are_refused(kms: Any, iam: Any, server: KhoaServer) -> None:
    """A policy names a tag key without case: with "env" and "ENV" both on a key, a Deny on
    aws:ResourceTag/env would check only one of the two values."""
    variants = [{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "ENV", "TagValue": "dev"}]
    assert error_code(kms.create_key, Tags=variants) == "TagException"
    key = kms.create_key(Tags=[{"TagKey": "classification", "TagValue": "restricted"}])["KeyMetadata"][
        "KeyId"
    ]
    assert (
        error_code(kms.tag_resource, KeyId=key, Tags=[{"TagKey": "Classification", "TagValue": "public"}])
        == "TagException"
    )
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "classification", "TagValue": "restricted"}])
    assert all_tags(kms, key) == {"classification": "restricted"}
    reader = new_user(
        server,
        iam,
        allow("kms:Encrypt"),
        deny("kms:Encrypt", Condition={"StringEquals": {"aws:ResourceTag/classification": "restricted"}}),
    )
    assert error_code(reader.client("kms").encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"


# -- key policies ---------------------------------------------------------------------------------

AWS_DEFAULT_POLICY = {
    "Version": "2012-10-17",
    "Id": "key-default-1",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


def test_default_key_policy(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    response = kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")
    document = json.loads(response["Policy"])
    assert document == AWS_DEFAULT_POLICY
    # Same members in the same order as AWS writes them.
    assert list(document) == ["Version", "Id", "Statement"]
    assert list(document["Statement"][0]) == ["Sid", "Effect", "Principal", "Action", "Resource"]
    assert response["PolicyName"] == "default"
    # PolicyName is optional and defaults to "default"; the key ARN works too.
    assert kms.get_key_policy(KeyId=key["Arn"])["Policy"] == response["Policy"]


# GetKeyPolicy on AWS returns the default policy pretty-printed by Jackson: " : " between names
# and values, and arrays of objects opened as "[ {" (see the PutKeyPolicy CloudTrail example in the
# AWS KMS developer guide). Clients comparing policy text byte for byte depend on it.
AWS_DEFAULT_POLICY_TEXT = (
    "{\n"
    '  "Version" : "2012-10-17",\n'
    '  "Id" : "key-default-1",\n'
    '  "Statement" : [ {\n'
    '    "Sid" : "Enable IAM User Permissions",\n'
    '    "Effect" : "Allow",\n'
    '    "Principal" : {\n'
    f'      "AWS" : "arn:aws:iam::{ACCOUNT_ID}:root"\n'
    "    },\n"
    '    "Action" : "kms:*",\n'
    '    "Resource" : "*"\n'
    "  } ]\n"
    "}"
)


def test_default_key_policy_text_is_byte_for_byte_aws(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    assert kms.get_key_policy(KeyId=key["KeyId"])["Policy"] == AWS_DEFAULT_POLICY_TEXT


def test_put_key_policy_round_trip(kms: Any, iam: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    app = unique("app")  # a key policy may name only users and roles that exist
    iam.create_role(RoleName=app, AssumeRolePolicyDocument=trust({"AWS": ACCOUNT_ID}))
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "custom",
            "Statement": [
                {
                    "Sid": "Root",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "App",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:role/{app}"},
                    "Action": ["kms:Encrypt", "kms:Decrypt"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:EncryptionContext:app": "x"}},
                },
            ],
        }
    )
    kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=policy)
    # The document comes back exactly as it was put.
    assert kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"] == policy
    # PolicyName is optional on PutKeyPolicy too.
    kms.put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(AWS_DEFAULT_POLICY))
    assert json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"]) == AWS_DEFAULT_POLICY

    created = kms.create_key(Policy=policy)["KeyMetadata"]
    assert kms.get_key_policy(KeyId=created["KeyId"])["Policy"] == policy


def test_list_key_policies(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    listed = kms.list_key_policies(KeyId=key["KeyId"])
    assert listed["PolicyNames"] == ["default"]
    assert listed["Truncated"] is False
    assert error_code(kms.list_key_policies, KeyId=str(uuid.uuid4())) == "NotFoundException"


MALFORMED = [
    "{not json",
    "[]",
    json.dumps({"Version": "2012-10-17"}),
    json.dumps({"Version": "2012-10-17", "Statement": []}),
    json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}]}
    ),
    json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
    ),
    json.dumps(
        {"Version": "1999-01-01", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*"}]}
    ),
]


@pytest.mark.parametrize("policy", MALFORMED)
def test_malformed_policy(kms: Any, policy: str) -> None:
    key = kms.create_key()["KeyMetadata"]
    before = kms.get_key_policy(KeyId=key["KeyId"])["Policy"]
    assert error_code(kms.put_key_policy, KeyId=key["KeyId"], PolicyName="default", Policy=policy) == (
        "MalformedPolicyDocumentException"
    )
    assert kms.get_key_policy(KeyId=key["KeyId"])["Policy"] == before
    assert error_code(kms.create_key, Policy=policy) == "MalformedPolicyDocumentException"


def test_policy_errors(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    missing = str(uuid.uuid4())
    assert error_code(kms.get_key_policy, KeyId=missing, PolicyName="default") == "NotFoundException"
    assert error_code(kms.get_key_policy, KeyId=key["KeyId"], PolicyName="other") == "NotFoundException"
    policy = json.dumps(AWS_DEFAULT_POLICY)
    assert error_code(kms.put_key_policy, KeyId=missing, PolicyName="default", Policy=policy) == (
        "NotFoundException"
    )
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    # GetKeyPolicy works on a key pending deletion; PutKeyPolicy does not.
    assert json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"]) == AWS_DEFAULT_POLICY
    assert error_code(kms.put_key_policy, KeyId=key["KeyId"], PolicyName="default", Policy=policy) == (
        "KMSInvalidStateException"
    )
