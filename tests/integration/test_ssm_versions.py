"""GetParameterHistory, LabelParameterVersion / UnlabelParameterVersion and the 100-version limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code
from tests.support.names import parameter_name
from tests.support.server import KhoaServer

# -- GetParameterHistory -----------------------------------------------------------------------------


def test_history_fields(server: KhoaServer, ssm: Any) -> None:
    key_id = server.client("kms").create_key()["KeyMetadata"]["KeyId"]
    name = parameter_name("ver")
    ssm.put_parameter(Name=name, Value="one", Type="String", Description="first", AllowedPattern="^[a-z]+$")
    ssm.put_parameter(Name=name, Value="two", Type="SecureString", KeyId=key_id, Overwrite=True)
    policy = [
        {"Type": "NoChangeNotification", "Version": "1.0", "Attributes": {"After": "30", "Unit": "Days"}}
    ]
    ssm.put_parameter(
        Name=name,
        Value="three",
        Overwrite=True,
        Tier="Advanced",
        Policies=json.dumps(policy),
        Description="3rd",
    )
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["b-first", "a-first"])
    history = ssm.get_parameter_history(Name=name)["Parameters"]
    assert [h["Version"] for h in history] == [1, 2, 3]
    first, second, third = history
    assert first["Name"] == name
    assert first["Type"] == "String"
    assert first["Value"] == "one"
    assert first["Description"] == "first"
    assert first["AllowedPattern"] == "^[a-z]+$"
    assert sorted(first["Labels"]) == ["a-first", "b-first"]
    assert first["Tier"] == "Standard"
    assert first["Policies"] == []
    assert first["DataType"] == "text"
    assert first["LastModifiedUser"].endswith(":root")
    assert "KeyId" not in first
    assert second["Type"] == "SecureString"
    assert second["KeyId"] == key_id
    assert second["Value"] != "two"
    assert second["Labels"] == []
    assert third["Tier"] == "Advanced"
    assert third["Description"] == "3rd"
    (rendered,) = third["Policies"]
    assert rendered["PolicyType"] == "NoChangeNotification"
    assert rendered["PolicyStatus"] == "Pending"
    assert json.loads(rendered["PolicyText"]) == policy[0]
    decrypted = ssm.get_parameter_history(Name=name, WithDecryption=True)["Parameters"]
    assert [h["Value"] for h in decrypted] == ["one", "two", "three"]


def test_history_paging_and_errors(ssm: Any) -> None:
    name = parameter_name("ver")
    for i in range(7):
        ssm.put_parameter(Name=name, Value=f"v{i}", Type="String", Overwrite=True)
    first = ssm.get_parameter_history(Name=name, MaxResults=3)
    assert [h["Version"] for h in first["Parameters"]] == [1, 2, 3]
    second = ssm.get_parameter_history(Name=name, MaxResults=3, NextToken=first["NextToken"])
    assert [h["Version"] for h in second["Parameters"]] == [4, 5, 6]
    third = ssm.get_parameter_history(Name=name, MaxResults=3, NextToken=second["NextToken"])
    assert [h["Version"] for h in third["Parameters"]] == [7]
    assert "NextToken" not in third
    paged = [
        h["Version"]
        for p in ssm.get_paginator("get_parameter_history").paginate(Name=name)
        for h in p["Parameters"]
    ]
    assert paged == list(range(1, 8))
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter_history(Name=parameter_name("ver"))
    assert caught_code(exc) == "ParameterNotFound"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter_history(Name=name, MaxResults=51)
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter_history(Name=name, NextToken="garbage")
    assert caught_code(exc) == "InvalidNextToken"


# -- labels ------------------------------------------------------------------------------------------


def test_label_latest_by_default_and_move(ssm: Any) -> None:
    name = parameter_name("ver")
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    ssm.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    result = ssm.label_parameter_version(Name=name, Labels=["prod"])
    assert result["ParameterVersion"] == 2
    assert result["InvalidLabels"] == []
    assert ssm.get_parameter(Name=f"{name}:prod")["Parameter"]["Version"] == 2
    # Labelling another version moves the label there.
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["prod"])
    assert ssm.get_parameter(Name=f"{name}:prod")["Parameter"]["Version"] == 1
    labels = {h["Version"]: h["Labels"] for h in ssm.get_parameter_history(Name=name)["Parameters"]}
    assert labels == {1: ["prod"], 2: []}


def test_label_rules(ssm: Any) -> None:
    name = parameter_name("ver")
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    wanted = [
        "good.label-1_x",
        "1starts-with-digit",
        "awsReserved",
        "SSM-reserved",
        "has space",
        "Ünïcode",
        "ok",
    ]
    result = ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=wanted)
    assert sorted(result["InvalidLabels"]) == sorted(
        ["1starts-with-digit", "awsReserved", "SSM-reserved", "has space", "Ünïcode"]
    )
    history = ssm.get_parameter_history(Name=name)["Parameters"]
    assert sorted(history[0]["Labels"]) == ["good.label-1_x", "ok"]
    with pytest.raises(ClientError) as exc:
        ssm.label_parameter_version(Name=name, Labels=["x" * 101])
    assert caught_code(exc) == "ValidationException"


def test_label_errors(ssm: Any) -> None:
    name = parameter_name("ver")
    with pytest.raises(ClientError) as exc:
        ssm.label_parameter_version(Name=name, Labels=["a"])
    assert caught_code(exc) == "ParameterNotFound"
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    with pytest.raises(ClientError) as exc:
        ssm.label_parameter_version(Name=name, ParameterVersion=5, Labels=["a"])
    assert caught_code(exc) == "ParameterVersionNotFound"


def test_ten_labels_per_version(ssm: Any) -> None:
    name = parameter_name("ver")
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    ssm.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=[f"l{i}" for i in range(10)])
    with pytest.raises(ClientError) as exc:
        ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["eleventh"])
    assert caught_code(exc) == "ParameterVersionLabelLimitExceeded"
    # Re-applying labels already there is not an addition.
    assert (
        ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["l0", "l1"])["InvalidLabels"] == []
    )
    # Moving one away makes room.
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["l9"])
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["eleventh"])
    history = {h["Version"]: sorted(h["Labels"]) for h in ssm.get_parameter_history(Name=name)["Parameters"]}
    assert len(history[1]) == 10
    assert history[2] == ["l9"]


def test_unlabel(ssm: Any) -> None:
    name = parameter_name("ver")
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    ssm.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["a", "b"])
    result = ssm.unlabel_parameter_version(Name=name, ParameterVersion=1, Labels=["a", "missing"])
    assert result["RemovedLabels"] == ["a"]
    assert result["InvalidLabels"] == ["missing"]
    # A label on another version is not removed from this one.
    result = ssm.unlabel_parameter_version(Name=name, ParameterVersion=2, Labels=["b"])
    assert result["RemovedLabels"] == []
    assert result["InvalidLabels"] == ["b"]
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=f"{name}:a")
    assert caught_code(exc) == "ParameterVersionNotFound"
    with pytest.raises(ClientError) as exc:
        ssm.unlabel_parameter_version(Name=name, ParameterVersion=9, Labels=["b"])
    assert caught_code(exc) == "ParameterVersionNotFound"
    with pytest.raises(ClientError) as exc:
        ssm.unlabel_parameter_version(Name=parameter_name("ver"), ParameterVersion=1, Labels=["b"])
    assert caught_code(exc) == "ParameterNotFound"


# -- 100 versions ------------------------------------------------------------------------------------


def test_hundred_versions_kept(ssm: Any) -> None:
    name = parameter_name("ver")
    for i in range(1, 101):
        ssm.put_parameter(Name=name, Value=f"v{i}", Type="String", Overwrite=True)
    assert ssm.put_parameter(Name=name, Value="v101", Type="String", Overwrite=True)["Version"] == 101
    versions = [
        h["Version"]
        for p in ssm.get_paginator("get_parameter_history").paginate(Name=name)
        for h in p["Parameters"]
    ]
    assert versions == list(range(2, 102))
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=f"{name}:1")
    assert caught_code(exc) == "ParameterVersionNotFound"
    # A label on the oldest version blocks the next update.
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["pinned"])
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="v102", Type="String", Overwrite=True)
    assert caught_code(exc) == "ParameterMaxVersionLimitExceeded"
    assert "Version 2" in exc.value.response["Error"]["Message"]
    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 101
    # Moving the label away unblocks it.
    ssm.label_parameter_version(Name=name, ParameterVersion=101, Labels=["pinned"])
    assert ssm.put_parameter(Name=name, Value="v102", Type="String", Overwrite=True)["Version"] == 102
