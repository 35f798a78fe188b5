"""Parameter Store behaviours pinned to AWS's (issue 14), through boto3 and the aws CLI.

- ``/name`` and ``name`` are one parameter in a region (user guide: "/TestParam1" and "TestParam1" are
  not unique): put, get, label, history, delete and tags agree.
- Constraint messages for list members take AWS's form ("Member must satisfy constraint: [...]").
- ``/aws/reference/secretsmanager/<name>``: Name is the full reference path, and so is the name a
  missing secret's ParameterNotFound gives.
- Public parameters under ``/aws/service/global-infrastructure`` describe the regions and services
  served, and cannot be written.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.auth.regions import AWS_COMMERCIAL_REGIONS
from tests.support.awscli import aws_cli
from tests.support.errors import caught_code
from tests.support.iam import allow
from tests.support.identity import new_user
from tests.support.server import ACCOUNT_ID, REGION, TEST_REGIONS, KhoaServer, fresh_region

ROOT = "/aws/service/global-infrastructure"
SERVED_REGIONS = {*AWS_COMMERCIAL_REGIONS, *TEST_REGIONS}  # what the test server's KHOA_REGIONS lists
SERVICES = {"cloudtrail", "iam", "kms", "secretsmanager", "ssm", "sts"}


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return caught_code(exc), exc.value.response["Error"]["Message"]


def _by_path(ssm: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [
        p
        for page in ssm.get_paginator("get_parameters_by_path").paginate(**kwargs)
        for p in page["Parameters"]
    ]


def test_slash_and_no_slash_name_the_same_parameter(server: KhoaServer) -> None:
    region = fresh_region()
    ssm = server.client("ssm", region)
    bare = f"same-{uuid.uuid4().hex[:10]}"
    slashed = "/" + bare
    arn = f"arn:aws:ssm:{region}:{ACCOUNT_ID}:parameter/{bare}"

    assert ssm.put_parameter(Name=slashed, Value="one", Type="SecureString")["Version"] == 1
    assert _error(ssm.put_parameter, Name=bare, Value="dup", Type="String")[0] == "ParameterAlreadyExists"
    assert ssm.put_parameter(Name=bare, Value="two", Overwrite=True)["Version"] == 2

    # Get: one value whichever form is asked for; Name echoes the form asked for, as AWS does.
    for name in (slashed, bare):
        got = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        assert (got["Name"], got["Value"], got["Version"], got["ARN"], got["Type"]) == (
            name,
            "two",
            2,
            arn,
            "SecureString",
        )
    assert ssm.get_parameter(Name=arn, WithDecryption=True)["Parameter"]["Value"] == "two"
    assert ssm.get_parameter(Name=f"{bare}:1", WithDecryption=True)["Parameter"]["Value"] == "one"
    both = ssm.get_parameters(Names=[slashed, bare], WithDecryption=True)
    assert both["InvalidParameters"] == []
    assert sorted((p["Name"], p["Value"]) for p in both["Parameters"]) == [(slashed, "two"), (bare, "two")]

    # Listings show the one parameter once, by its stored name (without the slash).
    described = ssm.describe_parameters()["Parameters"]
    assert [(p["Name"], p["Version"]) for p in described] == [(bare, 2)]
    assert [p["Name"] for p in _by_path(ssm, Path="/")] == [bare]

    # Labels and history through either form.
    assert ssm.label_parameter_version(Name=bare, ParameterVersion=1, Labels=["blue"])["InvalidLabels"] == []
    assert ssm.get_parameter(Name=f"{slashed}:blue", WithDecryption=True)["Parameter"]["Value"] == "one"
    history = ssm.get_parameter_history(Name=slashed)["Parameters"]
    assert [(h["Name"], h["Version"], h["Labels"]) for h in history] == [
        (slashed, 1, ["blue"]),
        (slashed, 2, []),
    ]
    assert ssm.unlabel_parameter_version(Name=slashed, ParameterVersion=1, Labels=["blue"])[
        "RemovedLabels"
    ] == ["blue"]
    assert [h["Labels"] for h in ssm.get_parameter_history(Name=bare)["Parameters"]] == [[], []]

    # Tags through either form.
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId=slashed, Tags=[{"Key": "team", "Value": "a"}]
    )
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=bare)["TagList"] == [
        {"Key": "team", "Value": "a"}
    ]
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=bare, TagKeys=["team"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=slashed)["TagList"] == []

    # Delete through one form removes the parameter for both.
    ssm.delete_parameter(Name=bare)
    for name in (slashed, bare):
        assert _error(ssm.get_parameter, Name=name)[0] == "ParameterNotFound"
    assert ssm.describe_parameters()["Parameters"] == []
    ssm.put_parameter(Name=bare, Value="again", Type="String")
    assert ssm.delete_parameters(Names=[slashed])["DeletedParameters"] == [slashed]
    assert _error(ssm.get_parameter, Name=bare)[0] == "ParameterNotFound"


def test_list_member_constraint_messages_take_aws_form(server: KhoaServer, ssm: Any) -> None:
    name = f"/fidelity/{uuid.uuid4().hex[:10]}"
    ssm.put_parameter(Name=name, Value="v", Type="String")
    long_label = "a" * 101
    code, message = _error(ssm.label_parameter_version, Name=name, Labels=[long_label])
    assert code == "ValidationException"
    assert message == (
        f"1 validation error detected: Value '[{long_label}]' at 'labels' failed to satisfy constraint: "
        "Member must satisfy constraint: [Member must have length less than or equal to 100, "
        "Member must have length greater than or equal to 1]"
    )
    unchecked = server.client("ssm", validate=False)
    code, message = _error(unchecked.label_parameter_version, Name=name, Labels=["ok", ""])
    assert code == "ValidationException"
    assert (
        "Value '[ok, ]' at 'labels' failed to satisfy constraint: Member must satisfy constraint: ["
        in message
    )
    assert ssm.get_parameter_history(Name=name)["Parameters"][0]["Labels"] == []  # nothing was labelled

    # Every list of scalars, in every service: here KMS's grant operations (an enum member).
    kms = server.client("kms", validate=False)
    key_id = server.client("kms").create_key()["KeyMetadata"]["KeyId"]
    code, message = _error(
        kms.create_grant,
        KeyId=key_id,
        GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:root",
        Operations=["Nope"],
    )
    assert code == "ValidationException"
    assert message.startswith(
        "1 validation error detected: Value '[Nope]' at 'operations' failed to satisfy constraint: "
        "Member must satisfy constraint: [Member must satisfy enum value set: [Decrypt, Encrypt, "
    )


def test_secrets_manager_reference_names_the_full_path(ssm: Any, sm: Any) -> None:
    secret = f"fidelity/{uuid.uuid4().hex[:10]}"
    sm.create_secret(Name=secret, SecretString="s3cr3t-value")
    reference = f"/aws/reference/secretsmanager/{secret}"
    for asked in (reference, f"{reference}:AWSCURRENT"):
        parameter = ssm.get_parameter(Name=asked, WithDecryption=True)["Parameter"]
        assert parameter["Name"] == reference
        assert parameter["Value"] == "s3cr3t-value"
    missing = f"/aws/reference/secretsmanager/fidelity/{uuid.uuid4().hex[:10]}"
    assert _error(ssm.get_parameter, Name=missing, WithDecryption=True) == (
        "ParameterNotFound",
        f"Secret {missing} not found.",
    )


def test_public_global_infrastructure_parameters(ssm: Any) -> None:
    region = ssm.get_parameter(Name=f"{ROOT}/regions/{REGION}")["Parameter"]
    assert (region["Value"], region["Type"], region["Version"], region["DataType"]) == (
        REGION,
        "String",
        1,
        "text",
    )
    assert region["ARN"] == f"arn:aws:ssm:{REGION}::parameter{ROOT}/regions/{REGION}"  # no account, as AWS
    assert (
        ssm.get_parameter(Name=f"{ROOT}/regions/us-east-1/longName")["Parameter"]["Value"]
        == "US East (N. Virginia)"
    )
    assert ssm.get_parameter(Name=f"{ROOT}/regions/eu-west-1/partition")["Parameter"]["Value"] == "aws"
    assert (
        ssm.get_parameter(Name=f"{ROOT}/services/kms/longName")["Parameter"]["Value"]
        == "AWS Key Management Service"
    )
    endpoint = ssm.get_parameter(Name=f"{ROOT}/regions/eu-west-1/services/kms/endpoint")["Parameter"]
    assert endpoint["Value"] == "kms.eu-west-1.amazonaws.com"
    assert ssm.get_parameter(Name=region["ARN"])["Parameter"]["Value"] == REGION
    got = ssm.get_parameters(Names=[f"{ROOT}/services/ssm", f"{ROOT}/services/s3"])
    assert [p["Value"] for p in got["Parameters"]] == ["ssm"]
    assert got["InvalidParameters"] == [f"{ROOT}/services/s3"]  # a service Khoa does not serve
    assert _error(ssm.get_parameter, Name=f"{ROOT}/regions/mars-north-1")[0] == "ParameterNotFound"

    # By path: every served region, one level, paged.
    regions = _by_path(ssm, Path=f"{ROOT}/regions", PaginationConfig={"PageSize": 10})
    assert {p["Name"] for p in regions} == {f"{ROOT}/regions/{r}" for r in SERVED_REGIONS}
    assert {p["Value"] for p in regions} == SERVED_REGIONS
    first = ssm.get_parameters_by_path(Path=f"{ROOT}/services", MaxResults=4)
    assert len(first["Parameters"]) == 4
    rest = ssm.get_parameters_by_path(Path=f"{ROOT}/services", MaxResults=4, NextToken=first["NextToken"])
    assert "NextToken" not in rest
    assert {p["Value"] for p in first["Parameters"] + rest["Parameters"]} == SERVICES
    # Recursive: a service's whole subtree.
    kms_tree = {p["Name"]: p["Value"] for p in _by_path(ssm, Path=f"{ROOT}/services/kms", Recursive=True)}
    assert kms_tree[f"{ROOT}/services/kms/longName"] == "AWS Key Management Service"
    assert {n for n in kms_tree if n.startswith(f"{ROOT}/services/kms/regions/")} == {
        f"{ROOT}/services/kms/regions/{r}" for r in SERVED_REGIONS
    }
    us_east = {p["Name"]: p["Value"] for p in _by_path(ssm, Path=f"{ROOT}/regions/{REGION}", Recursive=True)}
    assert {
        n.rsplit("/", 1)[1] for n in us_east if "/services/" in n and not n.endswith("/endpoint")
    } == SERVICES
    assert (
        _by_path(ssm, Path=f"{ROOT}/regions", ParameterFilters=[{"Key": "Type", "Values": ["SecureString"]}])
        == []
    )

    # Read-only: writes are refused as AWS refuses them.
    assert (
        _error(ssm.put_parameter, Name=f"{ROOT}/regions/{REGION}", Value="x", Type="String", Overwrite=True)[
            0
        ]
        == "AccessDeniedException"
    )
    assert _error(ssm.delete_parameter, Name=f"{ROOT}/regions/{REGION}")[0] == "AccessDeniedException"
    assert ssm.get_parameter(Name=f"{ROOT}/regions/{REGION}")["Parameter"]["Value"] == REGION


def test_public_parameters_are_authorised_on_their_account_less_arn(server: KhoaServer, iam: Any) -> None:
    # The policy AWS users write for public parameters: their ARNs have no account.
    user = new_user(
        server,
        iam,
        allow(["ssm:GetParameter", "ssm:GetParametersByPath"], "arn:aws:ssm:*::parameter/aws/service/*"),
    )
    ssm = user.client("ssm")
    assert ssm.get_parameter(Name=f"{ROOT}/services/kms")["Parameter"]["Value"] == "kms"
    assert {p["Value"] for p in _by_path(ssm, Path=f"{ROOT}/services")} == SERVICES
    own = f"/fidelity/{uuid.uuid4().hex[:10]}"
    server.client("ssm").put_parameter(Name=own, Value="v", Type="String")
    assert _error(ssm.get_parameter, Name=own)[0] == "AccessDeniedException"


def test_public_parameters_with_the_aws_cli(server: KhoaServer) -> None:
    cli = aws_cli(server.endpoint, service="ssm")
    assert cli.text(
        "get-parameter", "--name", f"{ROOT}/regions/us-west-2/longName", "--query", "Parameter.Value"
    ) == ("US West (Oregon)")
    # The CLI pages through the whole listing itself.
    services = cli.json("get-parameters-by-path", "--path", f"{ROOT}/services", "--page-size", "2")
    assert {p["Name"] for p in services["Parameters"]} == {f"{ROOT}/services/{s}" for s in SERVICES}
    refused = cli.run(
        "put-parameter", "--name", f"{ROOT}/services/kms", "--value", "x", "--type", "String", check=False
    )
    assert refused.returncode != 0
    assert "AccessDeniedException" in refused.stderr
