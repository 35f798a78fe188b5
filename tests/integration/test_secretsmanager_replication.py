"""Multi-Region secrets between regions of one server, through boto3: ReplicateSecretToRegions,
CreateSecret's AddReplicaRegions, RemoveRegionsFromReplication and StopReplicationToReplica. A replica
is readable in its region, refuses writes (except a change of its own KMS key), and follows every write
to the primary."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.rotation import wait_for
from tests.support.server import ACCOUNT_ID, KhoaServer, fresh_region


@pytest.fixture
def regions(server: KhoaServer) -> tuple[str, str, str]:
    return fresh_region(), fresh_region(), fresh_region()


@pytest.fixture
def clients(server: KhoaServer, regions: tuple[str, str, str]) -> tuple[Any, Any, Any]:
    primary, east, west = regions
    return (
        server.client("secretsmanager", region=primary),
        server.client("secretsmanager", region=east),
        server.client("secretsmanager", region=west),
    )


def test_replicate_and_read_in_each_region(
    server: KhoaServer, regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    primary_region, east_region, west_region = regions
    primary, east, west = clients
    name = secret_name("replicated")
    created = primary.create_secret(Name=name, SecretString="everywhere", Tags=[{"Key": "a", "Value": "b"}])
    west_key = server.client("kms", region=west_region).create_key()["KeyMetadata"]
    result = primary.replicate_secret_to_regions(
        SecretId=name,
        AddReplicaRegions=[{"Region": east_region}, {"Region": west_region, "KmsKeyId": west_key["KeyId"]}],
    )
    assert result["ARN"] == created["ARN"]
    statuses = {s["Region"]: s for s in result["ReplicationStatus"]}
    assert statuses[east_region]["Status"] == "InSync"
    assert statuses[east_region]["KmsKeyId"] == "alias/aws/secretsmanager"
    assert statuses[west_region]["KmsKeyId"] == west_key["KeyId"]

    replica_arn = created["ARN"].replace(primary_region, east_region)
    for client, region, arn in (
        (east, east_region, replica_arn),
        (west, west_region, created["ARN"].replace(primary_region, west_region)),
    ):
        value = client.get_secret_value(SecretId=name)
        assert value["SecretString"] == "everywhere"
        assert value["ARN"] == arn
        assert value["VersionId"] == created["VersionId"]
        assert client.get_secret_value(SecretId=arn)["SecretString"] == "everywhere"
        described = client.describe_secret(SecretId=name)
        assert described["PrimaryRegion"] == primary_region
        assert described["Tags"] == [{"Key": "a", "Value": "b"}]
        assert "ReplicationStatus" not in described
        listed = client.list_secrets(Filters=[{"Key": "primary-region", "Values": [primary_region]}])
        assert [s["Name"] for s in listed["SecretList"]] == [name]
    # each replica is encrypted under a key of its own region
    west_versions = west.list_secret_version_ids(SecretId=name)["Versions"]
    assert west_versions[0]["KmsKeyIds"] == [west_key["Arn"]]
    east_key = server.client("kms", region=east_region).describe_key(KeyId="alias/aws/secretsmanager")
    assert east.list_secret_version_ids(SecretId=name)["Versions"][0]["KmsKeyIds"] == [
        east_key["KeyMetadata"]["Arn"]
    ]
    described = primary.describe_secret(SecretId=name)
    assert {s["Region"] for s in described["ReplicationStatus"]} == {east_region, west_region}
    assert described["PrimaryRegion"] == primary_region

    # access in a replica region shows in the primary's status (written moments after the read)
    def east_accessed() -> bool:
        status = {s["Region"]: s for s in primary.describe_secret(SecretId=name)["ReplicationStatus"]}
        return "LastAccessedDate" in status[east_region]

    wait_for(east_accessed)


def test_writes_to_the_primary_are_mirrored(
    regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    _, east_region, _ = regions
    primary, east, _ = clients
    name = secret_name("replicated")
    created = primary.create_secret(
        Name=name, SecretString="one", AddReplicaRegions=[{"Region": east_region}]
    )
    assert [(s["Region"], s["Status"]) for s in created["ReplicationStatus"]] == [(east_region, "InSync")]
    assert east.get_secret_value(SecretId=name)["VersionId"] == created["VersionId"]
    v2 = primary.put_secret_value(SecretId=name, SecretString="two")["VersionId"]
    assert east.get_secret_value(SecretId=name)["SecretString"] == "two"
    assert east.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "one"
    primary.update_secret(SecretId=name, Description="described")
    primary.tag_resource(SecretId=name, Tags=[{"Key": "t", "Value": "1"}])
    described = east.describe_secret(SecretId=name)
    assert described["Description"] == "described"
    assert described["Tags"] == [{"Key": "t", "Value": "1"}]
    v3 = primary.put_secret_value(SecretId=name, SecretString="three", VersionStages=["AWSPENDING"])[
        "VersionId"
    ]
    primary.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v3, RemoveFromVersionId=v2
    )
    assert east.get_secret_value(SecretId=name)["SecretString"] == "three"
    assert (
        east.describe_secret(SecretId=name)["VersionIdsToStages"]
        == primary.describe_secret(SecretId=name)["VersionIdsToStages"]
    )
    primary.untag_resource(SecretId=name, TagKeys=["t"])
    # the replica mirrors the primary's tag list, empty now (AWS returns [] once every tag is removed)
    assert east.describe_secret(SecretId=name)["Tags"] == []


def test_writes_to_a_replica_are_refused(
    server: KhoaServer, regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    _, east_region, _ = regions
    primary, east, _ = clients
    name = secret_name("replicated")
    primary.create_secret(Name=name, SecretString="one", AddReplicaRegions=[{"Region": east_region}])
    refused = [
        (east.put_secret_value, {"SecretString": "x"}),
        (east.update_secret, {"Description": "x"}),
        (east.update_secret, {"SecretString": "x"}),
        (east.tag_resource, {"Tags": [{"Key": "a", "Value": "b"}]}),
        (east.untag_resource, {"TagKeys": ["a"]}),
        (east.delete_secret, {}),
        (east.delete_secret, {"ForceDeleteWithoutRecovery": True}),
        (east.put_resource_policy, {"ResourcePolicy": '{"Version":"2012-10-17","Statement":[]}'}),
        (east.delete_resource_policy, {}),
        (east.rotate_secret, {"RotationLambdaARN": f"arn:aws:lambda:{east_region}:{ACCOUNT_ID}:function:f"}),
        (east.replicate_secret_to_regions, {"AddReplicaRegions": [{"Region": "zz-other-3"}]}),
        (east.remove_regions_from_replication, {"RemoveReplicaRegions": [east_region]}),
    ]
    for call, kwargs in refused:
        assert error_code(call, SecretId=name, **kwargs) == "InvalidParameterException", call
    versions = east.list_secret_version_ids(SecretId=name)["Versions"]
    assert east.get_secret_value(SecretId=name)["SecretString"] == "one"
    assert len(versions) == 1
    # ... except changing the replica's own KMS key
    key = server.client("kms", region=east_region).create_key()["KeyMetadata"]
    east.update_secret(SecretId=name, KmsKeyId=key["Arn"])
    assert east.list_secret_version_ids(SecretId=name)["Versions"][0]["KmsKeyIds"] == [key["Arn"]]
    assert east.get_secret_value(SecretId=name)["SecretString"] == "one"
    # later versions from the primary use that key too
    primary.put_secret_value(SecretId=name, SecretString="two")
    assert east.get_secret_value(SecretId=name)["SecretString"] == "two"
    assert {tuple(v["KmsKeyIds"]) for v in east.list_secret_version_ids(SecretId=name)["Versions"]} == {
        (key["Arn"],)
    }


def test_primary_with_replicas_can_not_be_deleted(
    regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    _, east_region, west_region = regions
    primary, east, _ = clients
    name = secret_name("replicated")
    primary.create_secret(
        Name=name, SecretString="v", AddReplicaRegions=[{"Region": east_region}, {"Region": west_region}]
    )
    assert error_code(primary.delete_secret, SecretId=name) == "InvalidParameterException"
    assert error_code(primary.delete_secret, SecretId=name, ForceDeleteWithoutRecovery=True) == (
        "InvalidParameterException"
    )
    result = primary.remove_regions_from_replication(SecretId=name, RemoveReplicaRegions=[east_region])
    assert [s["Region"] for s in result["ReplicationStatus"]] == [west_region]
    assert error_code(east.describe_secret, SecretId=name) == "ResourceNotFoundException"
    primary.remove_regions_from_replication(SecretId=name, RemoveReplicaRegions=[west_region])
    assert "ReplicationStatus" not in primary.describe_secret(SecretId=name)
    primary.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_stop_replication_promotes_the_replica(
    regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    primary_region, east_region, _ = regions
    primary, east, _ = clients
    name = secret_name("replicated")
    arn = primary.create_secret(Name=name, SecretString="v", AddReplicaRegions=[{"Region": east_region}])[
        "ARN"
    ]
    assert error_code(primary.stop_replication_to_replica, SecretId=name) == "InvalidRequestException"
    stopped = east.stop_replication_to_replica(SecretId=name)
    assert stopped["ARN"] == arn.replace(primary_region, east_region)
    # standalone now, neither has replicas, so neither has a PrimaryRegion
    assert "PrimaryRegion" not in east.describe_secret(SecretId=name)
    assert "ReplicationStatus" not in primary.describe_secret(SecretId=name)
    assert "PrimaryRegion" not in primary.describe_secret(SecretId=name)
    # now standalone: writable, and no longer following the old primary
    east.put_secret_value(SecretId=name, SecretString="own")
    primary.put_secret_value(SecretId=name, SecretString="primary's")
    assert east.get_secret_value(SecretId=name)["SecretString"] == "own"
    east.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    primary.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_existing_secret_in_the_target_region(
    regions: tuple[str, str, str], clients: tuple[Any, Any, Any]
) -> None:
    _, east_region, _ = regions
    primary, east, _ = clients
    name = secret_name("replicated")
    east.create_secret(Name=name, SecretString="local")
    primary.create_secret(Name=name, SecretString="global")
    result = primary.replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": east_region}])
    status = result["ReplicationStatus"][0]
    assert status["Status"] == "Failed"
    assert status["StatusMessage"]
    assert east.get_secret_value(SecretId=name)["SecretString"] == "local"
    result = primary.replicate_secret_to_regions(
        SecretId=name, AddReplicaRegions=[{"Region": east_region}], ForceOverwriteReplicaSecret=True
    )
    assert result["ReplicationStatus"][0]["Status"] == "InSync"
    assert east.get_secret_value(SecretId=name)["SecretString"] == "global"


def test_replication_argument_errors(regions: tuple[str, str, str], clients: tuple[Any, Any, Any]) -> None:
    primary_region, east_region, _ = regions
    primary, _, _ = clients
    name = secret_name("replicated")
    primary.create_secret(Name=name, SecretString="v")
    code = error_code(
        primary.replicate_secret_to_regions, SecretId=name, AddReplicaRegions=[{"Region": primary_region}]
    )
    assert code == "InvalidParameterException"
    code = error_code(
        primary.create_secret,
        Name=secret_name("replicated"),
        SecretString="v",
        AddReplicaRegions=[{"Region": primary_region}],
    )
    assert code == "InvalidParameterException"
    # a region this installation does not serve (KHOA_REGIONS) would start an audit chain nobody reads
    code = error_code(
        primary.replicate_secret_to_regions, SecretId=name, AddReplicaRegions=[{"Region": "xx-yyy-9"}]
    )
    assert code == "InvalidParameterException"
    code = error_code(
        primary.replicate_secret_to_regions,
        SecretId=secret_name("missing"),
        AddReplicaRegions=[{"Region": east_region}],
    )
    assert code == "ResourceNotFoundException"
    # a replica key that does not exist fails that replica only
    result = primary.replicate_secret_to_regions(
        SecretId=name, AddReplicaRegions=[{"Region": east_region, "KmsKeyId": str(uuid.uuid4())}]
    )
    assert result["ReplicationStatus"][0]["Status"] == "Failed"
