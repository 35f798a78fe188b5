"""Secrets Manager versions through boto3 against a real server: PutSecretValue, UpdateSecret,
UpdateSecretVersionStage, ListSecretVersionIds, the 20-label limit and version retention.

Staging labels move exactly as the AWS Secrets Manager API reference describes: a label is on at most
one version; moving AWSCURRENT moves AWSPREVIOUS to the version it left; AWSCURRENT can't be removed;
a label attached elsewhere can only be moved by naming the version it leaves.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.server import KhoaServer

HOUR = 3600
DAY = 86400


def stages_of(sm: Any, name: str) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in sm.describe_secret(SecretId=name).get("VersionIdsToStages", {}).items()}


def test_put_secret_value_moves_current_and_previous(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    put = sm.put_secret_value(SecretId=name, SecretString="two")
    v2 = put["VersionId"]
    assert put["VersionStages"] == ["AWSCURRENT"]
    assert put["Name"] == name
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    v3 = sm.put_secret_value(SecretId=name, SecretBinary=b"three")["VersionId"]
    # v1 lost its last label: deprecated, so no longer listed
    assert stages_of(sm, name) == {v2: ["AWSPREVIOUS"], v3: ["AWSCURRENT"]}
    assert sm.get_secret_value(SecretId=name)["SecretBinary"] == b"three"
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "two"


def test_put_with_custom_stages_leaves_current_alone(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    put = sm.put_secret_value(SecretId=name, SecretString="pending", VersionStages=["AWSPENDING", "blue"])
    v2 = put["VersionId"]
    assert sorted(put["VersionStages"]) == ["AWSPENDING", "blue"]
    assert stages_of(sm, name) == {v1: ["AWSCURRENT"], v2: ["AWSPENDING", "blue"]}
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "one"
    # a custom label moves without a trace; AWSCURRENT given explicitly moves AWSPREVIOUS too
    v3 = sm.put_secret_value(SecretId=name, SecretString="three", VersionStages=["blue", "AWSCURRENT"])[
        "VersionId"
    ]
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSPENDING"], v3: ["AWSCURRENT", "blue"]}


def test_put_requires_a_value(sm: Any) -> None:
    name = secret_name("versions")
    sm.create_secret(Name=name, SecretString="one")
    assert error_code(sm.put_secret_value, SecretId=name) == "InvalidRequestException"
    code = error_code(sm.put_secret_value, SecretId=name, SecretString="a", SecretBinary=b"b")
    assert code == "InvalidParameterException"
    assert error_code(sm.put_secret_value, SecretId=secret_name("none"), SecretString="a") == (
        "ResourceNotFoundException"
    )


def test_update_secret_with_a_value_makes_a_current_version(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    updated = sm.update_secret(SecretId=name, SecretString="two")
    v2 = updated["VersionId"]
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    # metadata-only updates make no version
    assert "VersionId" not in sm.update_secret(SecretId=name, Description="d")
    assert len(stages_of(sm, name)) == 2
    # UpdateSecret repeating a token with its value is the same request again: it succeeds with that
    # version and changes nothing; another value under it is refused
    assert sm.update_secret(SecretId=name, SecretString="two", ClientRequestToken=v2)["VersionId"] == v2
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    code = error_code(sm.update_secret, SecretId=name, SecretString="other", ClientRequestToken=v2)
    assert code == "ResourceExistsException"
    token = str(uuid.uuid4())
    assert (
        sm.update_secret(SecretId=name, SecretString="three", ClientRequestToken=token)["VersionId"] == token
    )


def test_update_secret_version_stage_rules(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two", VersionStages=["AWSPENDING"])["VersionId"]

    # AWSCURRENT can't move without naming the version it leaves
    code = error_code(
        sm.update_secret_version_stage, SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v2
    )
    assert code == "InvalidParameterException"
    # ... and must name the right one
    code = error_code(
        sm.update_secret_version_stage,
        SecretId=name,
        VersionStage="AWSCURRENT",
        MoveToVersionId=v2,
        RemoveFromVersionId=v2,
    )
    assert code == "InvalidParameterException"
    moved = sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v2, RemoveFromVersionId=v1
    )
    assert moved["Name"] == name
    # the version AWSCURRENT left gets AWSPREVIOUS
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT", "AWSPENDING"]}
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"

    # removing AWSPENDING from the version it is on
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=v2)
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    # AWSCURRENT can't be removed, only moved
    code = error_code(
        sm.update_secret_version_stage, SecretId=name, VersionStage="AWSCURRENT", RemoveFromVersionId=v2
    )
    assert code == "InvalidParameterException"
    # RemoveFromVersionId must be the version that has the label
    code = error_code(
        sm.update_secret_version_stage, SecretId=name, VersionStage="AWSPREVIOUS", RemoveFromVersionId=v2
    )
    assert code == "InvalidParameterException"
    # unknown versions
    for field in ("MoveToVersionId", "RemoveFromVersionId"):
        code = error_code(
            sm.update_secret_version_stage, SecretId=name, VersionStage="x", **{field: str(uuid.uuid4())}
        )
        assert code == "InvalidParameterException"

    # rolling back: AWSCURRENT returns to v1, v2 becomes AWSPREVIOUS
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v1, RemoveFromVersionId=v2
    )
    assert stages_of(sm, name) == {v1: ["AWSCURRENT"], v2: ["AWSPREVIOUS"]}
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "one"


def test_custom_labels_with_update_secret_version_stage(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two")["VersionId"]
    # a label attached nowhere can be added without RemoveFromVersionId, and repeating it is a no-op
    for _ in range(2):
        sm.update_secret_version_stage(SecretId=name, VersionStage="green", MoveToVersionId=v1)
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS", "green"], v2: ["AWSCURRENT"]}
    # moving it elsewhere needs the version it leaves
    code = error_code(sm.update_secret_version_stage, SecretId=name, VersionStage="green", MoveToVersionId=v2)
    assert code == "InvalidParameterException"
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="green", MoveToVersionId=v2, RemoveFromVersionId=v1
    )
    assert stages_of(sm, name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT", "green"]}
    # removing AWSPREVIOUS deprecates v1
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSPREVIOUS", RemoveFromVersionId=v1)
    assert stages_of(sm, name) == {v2: ["AWSCURRENT", "green"]}
    listed = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert [v["VersionId"] for v in listed] == [v2]
    everything = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    assert {v["VersionId"] for v in everything} == {v1, v2}
    assert "VersionStages" not in next(v for v in everything if v["VersionId"] == v1)


def test_at_most_20_labels_per_version(sm: Any) -> None:
    name = secret_name("versions")
    labels = [f"label-{i}" for i in range(19)]
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    for label in labels:
        sm.update_secret_version_stage(SecretId=name, VersionStage=label, MoveToVersionId=v1)
    assert len(stages_of(sm, name)[v1]) == 20
    code = error_code(
        sm.update_secret_version_stage, SecretId=name, VersionStage="label-20", MoveToVersionId=v1
    )
    assert code == "LimitExceededException"
    # a new version with 20 labels is fine; they move off v1
    many = [f"label-{i}" for i in range(19)] + ["AWSCURRENT"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two", VersionStages=many)["VersionId"]
    assert len(stages_of(sm, name)[v2]) == 20
    assert stages_of(sm, name)[v1] == ["AWSPREVIOUS"]


def test_list_secret_version_ids(sm: Any) -> None:
    name = secret_name("versions")
    arn = sm.create_secret(Name=name, SecretString="v0")["ARN"]
    ids = [
        sm.put_secret_value(SecretId=name, SecretString=f"v{i}", VersionStages=[f"s{i}"])["VersionId"]
        for i in range(1, 6)
    ]
    listed = sm.list_secret_version_ids(SecretId=name)
    assert listed["ARN"] == arn
    assert listed["Name"] == name
    assert len(listed["Versions"]) == 6
    entry = next(v for v in listed["Versions"] if v["VersionId"] == ids[0])
    assert entry["VersionStages"] == ["s1"]
    assert entry["KmsKeyIds"]
    assert "CreatedDate" in entry
    # paging
    seen: list[str] = []
    kwargs: dict[str, Any] = {"SecretId": name, "MaxResults": 4}
    while True:
        page = sm.list_secret_version_ids(**kwargs)
        assert len(page["Versions"]) <= 4
        seen += [v["VersionId"] for v in page["Versions"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert sorted(seen) == sorted(v["VersionId"] for v in listed["Versions"])
    assert error_code(sm.list_secret_version_ids, SecretId=name, NextToken="not-a-token") == (
        "InvalidNextTokenException"
    )


def test_deprecated_versions_beyond_100_are_pruned(fresh_server: KhoaServer) -> None:
    """AWS removes unlabeled versions when there are more than 100, but never one created less than
    24 hours ago."""
    sm = fresh_server.start().client("secretsmanager")
    name = secret_name("versions")
    first = sm.create_secret(Name=name, SecretString="v0")["VersionId"]
    for i in range(1, 106):
        sm.put_secret_value(SecretId=name, SecretString=f"v{i}")
    every = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True, MaxResults=100)
    total = len(every["Versions"]) + len(
        sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True, NextToken=every["NextToken"])[
            "Versions"
        ]
    )
    assert total == 106  # all younger than a day: nothing removed yet
    fresh_server.advance_clock(DAY + HOUR)
    sm.put_secret_value(SecretId=name, SecretString="v106")
    versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True, MaxResults=100)
    assert "NextToken" not in versions
    assert len(versions["Versions"]) == 100
    ids = {v["VersionId"] for v in versions["Versions"]}
    assert first not in ids  # the oldest deprecated ones went first
    assert error_code(sm.get_secret_value, SecretId=name, VersionId=first) == "ResourceNotFoundException"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v106"
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "v105"


def test_concurrent_puts_keep_the_labels_consistent(fresh_server: KhoaServer) -> None:
    """Several server processes writing versions of one secret at once: every version is stored, and
    AWSCURRENT / AWSPREVIOUS end on the last two versions in the order the writes committed."""
    fresh_server.extra_args = ["--workers", "3"]
    server = fresh_server.start()
    name = secret_name("versions")
    server.client("secretsmanager").create_secret(Name=name, SecretString="v0")

    def writer(worker: int) -> list[str]:
        client = server.client("secretsmanager")
        return [
            client.put_secret_value(SecretId=name, SecretString=f"w{worker}-{i}")["VersionId"]
            for i in range(8)
        ]

    with ThreadPoolExecutor(max_workers=6) as pool:
        written = [v for ids in pool.map(writer, range(6)) for v in ids]
    sm = server.client("secretsmanager")
    listed = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    assert {v["VersionId"] for v in listed} >= set(written)
    assert len(listed) == 49
    labelled = stages_of(sm, name)
    assert sorted(label for labels in labelled.values() for label in labels) == ["AWSCURRENT", "AWSPREVIOUS"]
    assert len(labelled) == 2
    current = sm.get_secret_value(SecretId=name)
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert current["VersionId"] in written and previous["VersionId"] in written
    assert current["CreatedDate"] >= previous["CreatedDate"]
