"""Secrets Manager behaviours where Khoa follows what AWS answers (issue 14), through boto3 against a
real server: the word-by-word "all" and "description" filters of ListSecrets, when PrimaryRegion and
Tags appear, ClientRequestToken reuse, AWSPENDING when PutSecretValue moves AWSCURRENT, and tags of a
secret scheduled for deletion.

The expected answers are those recorded against AWS by public peer suites (moto's aws_verified tests,
LocalStack's snapshot-validated tests); the data here follows theirs where it shows a rule.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.server import KhoaServer, fresh_region

MARKED_FOR_DELETION = "You can't perform this operation on the secret because it was marked for deletion."


@pytest.fixture
def listing(server: KhoaServer) -> Any:
    """A client in a region no other test uses, so ListSecrets sees exactly this test's secrets."""
    return server.client("secretsmanager", region=fresh_region())


def found(sm: Any, *filters: tuple[str, list[str]]) -> set[str]:
    names: set[str] = set()
    request = [{"Key": key, "Values": values} for key, values in filters]
    for page in sm.get_paginator("list_secrets").paginate(Filters=request):
        names |= {s["Name"] for s in page["SecretList"]}
    return names


def error_of(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def labels(sm: Any, name: str) -> dict[str, list[str]]:
    return {
        v["VersionId"]: sorted(v["VersionStages"])
        for v in sm.list_secret_version_ids(SecretId=name)["Versions"]
        if v.get("VersionStages")
    }


# -- ListSecrets: "all" and "description" match every word of the value ---------------------------------
def test_all_filter_needs_every_word_of_the_value(listing: Any) -> None:
    listing.create_secret(Name="SecretOne", SecretString="s")
    listing.create_secret(Name="SecretTwo", SecretString="s", Description="DescTwo")
    listing.create_secret(Name="Thirdsecret", SecretString="s")
    listing.create_secret(Name="SecretFTag", SecretString="s", Tags=[{"Key": "1", "Value": "foo"}])
    listing.create_secret(Name="SecretFValue", SecretString="s", Tags=[{"Key": "foo", "Value": "v"}])
    listing.create_secret(Name="prod/AppBeta/x1", SecretString="s")
    listing.create_secret(Name="uat/COMPANY/x2", SecretString="s")
    listing.create_secret(Name="uat/COMPANYthings/x3", SecretString="s")
    everything = found(listing)
    assert len(everything) == 8

    # AND across the words: "d t" is only the secret whose words start with d and with t (DescTwo);
    # any single word would also find Thirdsecret and SecretFTag (t) — no longer
    assert found(listing, ("all", ["d t"])) == {"SecretTwo"}
    assert found(listing, ("all", ["t"])) == {"SecretTwo", "Thirdsecret", "SecretFTag"}
    # "SecretOne" is the words secret and one: only the secret with both
    assert found(listing, ("all", ["SecretOne"])) == {"SecretOne"}
    assert found(listing, ("all", ["AppBeta"])) == {"prod/AppBeta/x1"}
    assert found(listing, ("all", ["beta prod"])) == {"prod/AppBeta/x1"}
    assert found(listing, ("all", ["beta uat"])) == set()
    # the words of an "all" value may be found in different attributes (name and tag here)
    assert found(listing, ("all", ["secret foo"])) == {"SecretFTag", "SecretFValue"}
    # words start words: prefixes match, inner parts do not; case does not matter
    assert found(listing, ("all", ["sec"])) == {"SecretOne", "SecretTwo", "SecretFTag", "SecretFValue"}
    assert found(listing, ("all", ["ret"])) == set()
    assert found(listing, ("all", ["company"])) == {"uat/COMPANY/x2"}
    assert found(listing, ("all", ["Ythings"])) == {"uat/COMPANYthings/x3"}
    assert found(listing, ("all", ["things"])) == set()
    # a value without words matches nothing
    assert found(listing, ("all", ["+"])) == set()
    # "!" negates the whole value: every secret that does not have both words
    assert found(listing, ("all", ["!d t"])) == everything - {"SecretTwo"}
    # values of one filter still combine with OR
    assert found(listing, ("all", ["d t", "company"])) == {"SecretTwo", "uat/COMPANY/x2"}


def test_description_filter_matches_words_of_the_description(listing: Any) -> None:
    listing.create_secret(Name="one", SecretString="s", Description="a secret")
    listing.create_secret(Name="two", SecretString="s", Description="an secret")
    listing.create_secret(Name="three", SecretString="s", Description="asecret")
    listing.create_secret(Name="four", SecretString="s", Description="thesecret")
    listing.create_secret(Name="five", SecretString="s", Description="one and two")
    listing.create_secret(Name="six", SecretString="s")

    assert found(listing, ("description", ["a"])) == {"one", "two", "three", "five"}
    assert found(listing, ("description", ["a secret"])) == {"one", "two"}
    assert found(listing, ("description", ["A SECRET"])) == {"one", "two"}
    # a word inside the description, not at its start
    assert found(listing, ("description", ["secret"])) == {"one", "two"}
    assert found(listing, ("description", ["two"])) == {"five"}
    assert found(listing, ("description", ["o t"])) == {"five"}
    assert found(listing, ("description", ["!a"])) == {"four", "six"}
    assert found(listing, ("description", ["!c"])) == {"one", "two", "three", "four", "five", "six"}
    # filters with the same key combine with AND
    assert found(listing, ("description", ["one"]), ("description", ["two"])) == {"five"}
    # the name filter is still a prefix of the whole name
    assert found(listing, ("name", ["one two"])) == set()
    assert found(listing, ("description", ["a"]), ("name", ["secret"])) == set()


# -- PrimaryRegion only with replicas; Tags: [] once every tag is removed --------------------------------
def test_primary_region_only_for_replicated_secrets(server: KhoaServer) -> None:
    primary_region, replica_region = fresh_region(), fresh_region()
    primary = server.client("secretsmanager", region=primary_region)
    replica = server.client("secretsmanager", region=replica_region)
    name = secret_name("fidelity")
    primary.create_secret(Name=name, SecretString="v")
    assert "PrimaryRegion" not in primary.describe_secret(SecretId=name)
    assert "PrimaryRegion" not in primary.list_secrets()["SecretList"][0]

    primary.replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": replica_region}])
    assert primary.describe_secret(SecretId=name)["PrimaryRegion"] == primary_region
    assert primary.list_secrets()["SecretList"][0]["PrimaryRegion"] == primary_region
    assert replica.describe_secret(SecretId=name)["PrimaryRegion"] == primary_region
    assert replica.list_secrets()["SecretList"][0]["PrimaryRegion"] == primary_region

    primary.remove_regions_from_replication(SecretId=name, RemoveReplicaRegions=[replica_region])
    assert "PrimaryRegion" not in primary.describe_secret(SecretId=name)
    assert "PrimaryRegion" not in primary.list_secrets()["SecretList"][0]


def test_tags_are_an_empty_list_once_every_tag_is_removed(listing: Any) -> None:
    name = secret_name("fidelity")
    listing.create_secret(Name=name, SecretString="v")
    # never tagged: no Tags at all
    assert "Tags" not in listing.describe_secret(SecretId=name)
    assert "Tags" not in listing.list_secrets()["SecretList"][0]
    listing.untag_resource(SecretId=name, TagKeys=["never-there"])
    assert "Tags" not in listing.describe_secret(SecretId=name)

    listing.tag_resource(SecretId=name, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    listing.untag_resource(SecretId=name, TagKeys=["a"])
    assert listing.describe_secret(SecretId=name)["Tags"] == [{"Key": "b", "Value": "2"}]
    listing.untag_resource(SecretId=name, TagKeys=["b"])
    assert listing.describe_secret(SecretId=name)["Tags"] == []
    assert listing.list_secrets()["SecretList"][0]["Tags"] == []
    # the empty list is not a tag: tag filters do not find it
    assert found(listing, ("tag-key", [""])) == set()
    assert found(listing, ("tag-value", [""])) == set()
    # and it fills again
    listing.tag_resource(SecretId=name, Tags=[{"Key": "c", "Value": "3"}])
    assert listing.describe_secret(SecretId=name)["Tags"] == [{"Key": "c", "Value": "3"}]

    # a secret created with tags that loses them all
    tagged = secret_name("fidelity")
    listing.create_secret(Name=tagged, SecretString="v", Tags=[{"Key": "k", "Value": "v"}])
    listing.untag_resource(SecretId=tagged, TagKeys=["k"])
    assert listing.describe_secret(SecretId=tagged)["Tags"] == []


# -- ClientRequestToken reuse --------------------------------------------------------------------------
def test_client_request_token_reuse(sm: Any) -> None:
    name = secret_name("fidelity")
    token = str(uuid.uuid4())
    created = sm.create_secret(Name=name, SecretString="Hello", ClientRequestToken=token)
    arn = created["ARN"]
    in_use = (
        "ResourceExistsException",
        f"You can't use ClientRequestToken {token} because that value is already in use for a version of "
        f"secret {arn}.",
        400,
    )

    # CreateSecret: the same request again is the same answer; another value under the token is refused
    again = sm.create_secret(Name=name, SecretString="Hello", ClientRequestToken=token)
    assert {k: again[k] for k in ("ARN", "Name", "VersionId")} == {
        "ARN": arn,
        "Name": name,
        "VersionId": token,
    }
    assert error_of(sm.create_secret, Name=name, SecretString="Hi", ClientRequestToken=token) == in_use
    # without a version of that token, the name is what is taken
    other = str(uuid.uuid4())
    code, message, _ = error_of(sm.create_secret, Name=name, SecretString="Hi", ClientRequestToken=other)
    assert (code, message) == (
        "ResourceExistsException",
        f"The operation failed because the secret {name} already exists.",
    )

    # PutSecretValue
    put = sm.put_secret_value(SecretId=arn, SecretString="Hello", ClientRequestToken=token)
    assert (put["VersionId"], put["VersionStages"]) == (token, ["AWSCURRENT"])
    assert error_of(sm.put_secret_value, SecretId=arn, SecretString="Hi", ClientRequestToken=token) == in_use

    # UpdateSecret: idempotent too, although its API reference says an existing VersionId is an error
    updated = sm.update_secret(SecretId=name, SecretString="Hello", ClientRequestToken=token)
    assert updated["VersionId"] == token
    assert error_of(sm.update_secret, SecretId=arn, SecretString="Hi", ClientRequestToken=token) == in_use
    assert error_of(sm.update_secret, SecretId=arn, SecretBinary=b"Hello", ClientRequestToken=token) == in_use

    # nothing changed: one version, the first value, still current
    assert labels(sm, name) == {token: ["AWSCURRENT"]}
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "Hello"


# -- AWSPENDING when PutSecretValue moves AWSCURRENT -----------------------------------------------------
def test_put_secret_value_takes_pending_off_the_version_current_leaves(sm: Any) -> None:
    name = secret_name("fidelity")
    v0 = sm.create_secret(Name=name, SecretString="Something1")["VersionId"]
    v1 = sm.put_secret_value(SecretId=name, SecretString="Something2", VersionStages=["AWSPENDING"])[
        "VersionId"
    ]
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v1, RemoveFromVersionId=v0
    )
    # UpdateSecretVersionStage leaves AWSPENDING with AWSCURRENT
    assert labels(sm, name) == {v0: ["AWSPREVIOUS"], v1: ["AWSCURRENT", "AWSPENDING"]}

    put = sm.put_secret_value(SecretId=name, SecretString="SS3")
    assert put["VersionStages"] == ["AWSCURRENT"]
    # the version AWSCURRENT left keeps AWSPREVIOUS only: AWSPENDING is gone, not moved
    assert labels(sm, name) == {v1: ["AWSPREVIOUS"], put["VersionId"]: ["AWSCURRENT"]}
    assert (
        error_code(sm.get_secret_value, SecretId=name, VersionStage="AWSPENDING")
        == "ResourceNotFoundException"
    )
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "Something2"

    # a put that names AWSPENDING too takes it along to the new version
    v3 = sm.put_secret_value(SecretId=name, SecretString="S4", VersionStages=["AWSPENDING"])["VersionId"]
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v3, RemoveFromVersionId=put["VersionId"]
    )
    v4 = sm.put_secret_value(SecretId=name, SecretString="S5", VersionStages=["AWSCURRENT", "AWSPENDING"])
    assert labels(sm, name) == {v3: ["AWSPREVIOUS"], v4["VersionId"]: ["AWSCURRENT", "AWSPENDING"]}


# -- TagResource / UntagResource on a secret scheduled for deletion ------------------------------------
def test_tags_of_a_secret_scheduled_for_deletion_cannot_change(sm: Any) -> None:
    name = secret_name("fidelity")
    arn = sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "initial", "Value": "1"}])["ARN"]
    sm.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    refused = ("InvalidRequestException", MARKED_FOR_DELETION, 400)
    assert error_of(sm.tag_resource, SecretId=arn, Tags=[{"Key": "new", "Value": "2"}]) == refused
    assert error_of(sm.untag_resource, SecretId=arn, TagKeys=["initial"]) == refused
    # the same refusal as every other change to it
    assert error_of(sm.put_secret_value, SecretId=arn, SecretString="w") == refused
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "initial", "Value": "1"}]
    # a missing secret is still not found, and a restored one can be tagged again
    assert error_code(
        sm.tag_resource, SecretId=secret_name("missing"), Tags=[{"Key": "a", "Value": "b"}]
    ) == ("ResourceNotFoundException")
    sm.restore_secret(SecretId=name)
    sm.tag_resource(SecretId=arn, Tags=[{"Key": "new", "Value": "2"}])
    sm.untag_resource(SecretId=arn, TagKeys=["initial"])
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "new", "Value": "2"}]
