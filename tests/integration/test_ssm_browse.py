"""GetParametersByPath and DescribeParameters through boto3: hierarchy, filters, paging, errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code, failure
from tests.support.server import KhoaServer


@pytest.fixture
def tree(server: KhoaServer, ssm: Any) -> dict[str, Any]:
    """A small hierarchy under a unique root, with a customer key, a label and tags."""
    kms = server.client("kms")
    key_id = kms.create_key(Description="browse")["KeyMetadata"]["KeyId"]
    root = f"/br-{uuid.uuid4().hex[:10]}"
    ssm.put_parameter(
        Name=f"{root}/app/url", Value="https://x", Type="String", Tags=[{"Key": "env", "Value": "prod"}]
    )
    ssm.put_parameter(Name=f"{root}/app/hosts", Value="a,b", Type="StringList")
    ssm.put_parameter(Name=f"{root}/app/db/password", Value="pw-default", Type="SecureString")
    ssm.put_parameter(Name=f"{root}/app/db/token", Value="tok-custom", Type="SecureString", KeyId=key_id)
    ssm.put_parameter(
        Name=f"{root}/app/db/deep/er", Value="x", Type="String", Tags=[{"Key": "env", "Value": "dev"}]
    )
    ssm.put_parameter(Name=f"{root}/top", Value="t", Type="String", Tier="Advanced")
    ssm.put_parameter(Name=f"{root}/ami", Value="ami-12345678", Type="String", DataType="aws:ec2:image")
    ssm.label_parameter_version(Name=f"{root}/app/url", Labels=["live"])
    return {"root": root, "key_id": key_id}


def by_path(ssm: Any, **kwargs: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(**kwargs):
        found += page["Parameters"]
    return found


def describe(ssm: Any, **kwargs: Any) -> list[str]:
    found: list[str] = []
    for page in ssm.get_paginator("describe_parameters").paginate(**kwargs):
        found += [p["Name"] for p in page["Parameters"]]
    return found


# -- GetParametersByPath -----------------------------------------------------------------------------


def test_one_level_and_recursive(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    one = [p["Name"] for p in by_path(ssm, Path=f"{root}/app")]
    assert one == [f"{root}/app/hosts", f"{root}/app/url"]
    assert [p["Name"] for p in by_path(ssm, Path=f"{root}/app/")] == one
    recursive = [p["Name"] for p in by_path(ssm, Path=f"{root}/app", Recursive=True)]
    assert recursive == [
        f"{root}/app/db/deep/er",
        f"{root}/app/db/password",
        f"{root}/app/db/token",
        f"{root}/app/hosts",
        f"{root}/app/url",
    ]
    assert [p["Name"] for p in by_path(ssm, Path=root)] == [f"{root}/ami", f"{root}/top"]
    assert by_path(ssm, Path=f"{root}/nothing", Recursive=True) == []


def test_fields_and_decryption(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    encrypted = {p["Name"]: p for p in by_path(ssm, Path=f"{root}/app/db")}
    assert encrypted[f"{root}/app/db/password"]["Type"] == "SecureString"
    assert encrypted[f"{root}/app/db/password"]["Value"] != "pw-default"
    decrypted = {p["Name"]: p["Value"] for p in by_path(ssm, Path=f"{root}/app/db", WithDecryption=True)}
    assert decrypted == {f"{root}/app/db/password": "pw-default", f"{root}/app/db/token": "tok-custom"}
    entry = encrypted[f"{root}/app/db/token"]
    assert set(entry) >= {"Name", "Type", "Value", "Version", "LastModifiedDate", "ARN", "DataType"}


def test_by_path_filters(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    secure = by_path(
        ssm, Path=root, Recursive=True, ParameterFilters=[{"Key": "Type", "Values": ["SecureString"]}]
    )
    assert [p["Name"] for p in secure] == [f"{root}/app/db/password", f"{root}/app/db/token"]
    keyed = by_path(
        ssm, Path=root, Recursive=True, ParameterFilters=[{"Key": "KeyId", "Values": [tree["key_id"]]}]
    )
    assert [p["Name"] for p in keyed] == [f"{root}/app/db/token"]
    labelled = by_path(
        ssm,
        Path=root,
        Recursive=True,
        ParameterFilters=[{"Key": "Label", "Option": "Equals", "Values": ["live"]}],
    )
    assert [p["Name"] for p in labelled] == [f"{root}/app/url"]
    begins = by_path(
        ssm,
        Path=root,
        Recursive=True,
        ParameterFilters=[{"Key": "Type", "Option": "BeginsWith", "Values": ["StringL"]}],
    )
    assert [p["Name"] for p in begins] == [f"{root}/app/hosts"]


@pytest.mark.parametrize("key", ["Name", "Path", "Tier", "DataType", "tag:env"])
def test_by_path_refuses_describe_only_filter_keys(ssm: Any, tree: dict[str, Any], key: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path=tree["root"], ParameterFilters=[{"Key": key, "Values": ["x"]}])
    assert caught_code(exc) == "InvalidFilterKey"


def test_by_path_label_only_equals(ssm: Any, tree: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(
            Path=tree["root"], ParameterFilters=[{"Key": "Label", "Option": "BeginsWith", "Values": ["l"]}]
        )
    assert caught_code(exc) == "InvalidFilterOption"


def test_by_path_paging(ssm: Any) -> None:
    root = f"/pg-{uuid.uuid4().hex[:10]}"
    names = [f"{root}/p{i:02d}" for i in range(23)]
    for name in names:
        ssm.put_parameter(Name=name, Value="v", Type="String")
    first = ssm.get_parameters_by_path(Path=root, MaxResults=10)
    assert [p["Name"] for p in first["Parameters"]] == names[:10]
    second = ssm.get_parameters_by_path(Path=root, MaxResults=10, NextToken=first["NextToken"])
    assert [p["Name"] for p in second["Parameters"]] == names[10:20]
    third = ssm.get_parameters_by_path(Path=root, MaxResults=10, NextToken=second["NextToken"])
    assert [p["Name"] for p in third["Parameters"]] == names[20:]
    assert "NextToken" not in third
    assert [p["Name"] for p in by_path(ssm, Path=root, PaginationConfig={"PageSize": 7})] == names
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path=root, MaxResults=11)
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path=root, NextToken="!!not-a-token!!")
    assert caught_code(exc) == "InvalidNextToken"


def test_by_path_path_rules(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path="no-slash")
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path="/bad path")
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters_by_path(Path="/" + "/".join(f"l{i}" for i in range(16)))
    assert caught_code(exc) == "HierarchyLevelLimitExceededException"


# -- DescribeParameters ------------------------------------------------------------------------------


def test_describe_fields(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    page = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [f"{root}/app/db/token"]}])
    (entry,) = page["Parameters"]
    assert entry["Name"] == f"{root}/app/db/token"
    assert entry["Type"] == "SecureString"
    assert entry["KeyId"] == tree["key_id"]
    assert entry["Version"] == 1
    assert entry["Tier"] == "Standard"
    assert entry["Policies"] == []
    assert entry["DataType"] == "text"
    assert entry["LastModifiedUser"].endswith(":root")
    assert entry["ARN"].endswith(f":parameter{root}/app/db/token")
    assert "Value" not in entry


def test_describe_name_options(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    assert describe(
        ssm, ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [f"{root}/top"]}]
    ) == [f"{root}/top"]
    begins = describe(
        ssm, ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [f"{root}/app/db"]}]
    )
    assert begins == [f"{root}/app/db/deep/er", f"{root}/app/db/password", f"{root}/app/db/token"]
    contains = describe(
        ssm,
        ParameterFilters=[
            {"Key": "Name", "Option": "Contains", "Values": ["db/pass"]},
            {"Key": "Path", "Option": "Recursive", "Values": [root]},
        ],
    )
    assert contains == [f"{root}/app/db/password"]
    # A name given without its leading slash still matches, as in AWS.
    assert describe(ssm, ParameterFilters=[{"Key": "Name", "Values": [f"{root}/top".lstrip("/")]}]) == [
        f"{root}/top"
    ]


def test_describe_path_filter(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    one_level = describe(ssm, ParameterFilters=[{"Key": "Path", "Values": [f"{root}/app/db"]}])
    assert one_level == [f"{root}/app/db/password", f"{root}/app/db/token"]
    recursive = describe(
        ssm, ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [f"{root}/app/db"]}]
    )
    assert recursive == [f"{root}/app/db/deep/er", f"{root}/app/db/password", f"{root}/app/db/token"]


def test_describe_type_keyid_tier_datatype_tag(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    under = {"Key": "Path", "Option": "Recursive", "Values": [root]}

    def names(*filters: dict[str, Any]) -> list[str]:
        return describe(ssm, ParameterFilters=[under, *filters])

    assert names({"Key": "Type", "Values": ["StringList"]}) == [f"{root}/app/hosts"]
    assert names({"Key": "KeyId", "Values": ["alias/aws/ssm"]}) == [f"{root}/app/db/password"]
    assert names({"Key": "KeyId", "Values": [tree["key_id"]]}) == [f"{root}/app/db/token"]
    assert names({"Key": "Tier", "Values": ["Advanced"]}) == [f"{root}/top"]
    assert names({"Key": "DataType", "Values": ["aws:ec2:image"]}) == [f"{root}/ami"]
    assert names({"Key": "tag:env", "Values": ["prod"]}) == [f"{root}/app/url"]
    assert names({"Key": "tag:env"}) == [f"{root}/app/db/deep/er", f"{root}/app/url"]
    assert names({"Key": "tag:env", "Option": "BeginsWith", "Values": ["de"]}) == [f"{root}/app/db/deep/er"]
    assert names({"Key": "tag:missing"}) == []


def test_describe_legacy_filters(ssm: Any, tree: dict[str, Any]) -> None:
    root = tree["root"]
    assert describe(ssm, Filters=[{"Key": "Name", "Values": [f"{root}/app/h"]}]) == [f"{root}/app/hosts"]
    secure = describe(ssm, Filters=[{"Key": "KeyId", "Values": [tree["key_id"]]}])
    assert secure == [f"{root}/app/db/token"]
    with pytest.raises(ClientError) as exc:
        ssm.describe_parameters(
            Filters=[{"Key": "Type", "Values": ["String"]}],
            ParameterFilters=[{"Key": "Type", "Values": ["String"]}],
        )
    assert caught_code(exc) == "ValidationException"


def test_describe_legacy_filters_take_each_key_once(ssm: Any, tree: dict[str, Any]) -> None:
    """A repeated key of the deprecated Filters is refused as in ParameterFilters: each repeat used to
    multiply the query (70 Name filters of 50 values held the worker for two minutes)."""
    root = tree["root"]
    for key, values in (("Name", [f"{root}/app"]), ("Type", ["String"]), ("KeyId", [tree["key_id"]])):
        with pytest.raises(ClientError) as exc:
            ssm.describe_parameters(Filters=[{"Key": key, "Values": values}] * 2)
        code, message, status = failure(exc)
        assert (code, status) == ("InvalidFilterKey", 400)
        assert f"The following filter is duplicated in the request: {key}." in message
    with pytest.raises(ClientError) as exc:
        ssm.describe_parameters(Filters=[{"Key": "Name", "Values": [f"a{j}" for j in range(50)]}] * 40)
    assert caught_code(exc) == "InvalidFilterKey"
    # each key once, 50 values each (the model's most): served
    names = [f"{root}/app/{n}" for n in ("db/password", "hosts", "url", "x")] * 12 + [
        f"{root}/top",
        f"{root}/y",
    ]
    both = [
        {"Key": "Name", "Values": names},
        {"Key": "Type", "Values": ["String", "StringList", "SecureString"]},
    ]
    assert describe(ssm, Filters=both) == [
        f"{root}/app/db/password",
        f"{root}/app/hosts",
        f"{root}/app/url",
        f"{root}/top",
    ]


def test_describe_many_tag_filters(ssm: Any, tree: dict[str, Any]) -> None:
    """Tag filters have no maximum in the model: 1,000 of them made SQLite refuse the statement, which
    was answered 503 ("The database is unavailable"). No parameter has more than 50 tags, so more tag
    filters than that match nothing; many prefixes per tag filter are served too."""
    root = tree["root"]
    under = {"Key": "Path", "Option": "Recursive", "Values": [root]}
    thousand = [{"Key": f"tag:k{i}"} for i in range(1000)]
    assert ssm.describe_parameters(ParameterFilters=[under, *thousand])["Parameters"] == []
    prefixes = [f"x{i:02d}" for i in range(49)]
    env = {"Key": "tag:env", "Option": "BeginsWith", "Values": [*prefixes, "pr"]}
    assert describe(ssm, ParameterFilters=[under, env]) == [f"{root}/app/url"]
    both = {"Key": "tag:env", "Option": "BeginsWith", "Values": [*prefixes, "d"]}
    fifty = [
        under,
        both,
        *({"Key": f"tag:{p}", "Option": "BeginsWith", "Values": prefixes} for p in prefixes),
    ]
    assert describe(ssm, ParameterFilters=fifty) == []
    assert describe(ssm, ParameterFilters=fifty[:2]) == [f"{root}/app/db/deep/er"]


@pytest.mark.parametrize(
    ("filters", "code"),
    [
        ([{"Key": "Label", "Values": ["live"]}], "InvalidFilterKey"),
        ([{"Key": "Name", "Values": ["a"]}, {"Key": "Name", "Values": ["b"]}], "InvalidFilterKey"),
        ([{"Key": "Name", "Option": "Recursive", "Values": ["/a"]}], "InvalidFilterOption"),
        ([{"Key": "Path", "Option": "Equals", "Values": ["/a"]}], "InvalidFilterOption"),
        ([{"Key": "Type", "Option": "Contains", "Values": ["String"]}], "InvalidFilterOption"),
        ([{"Key": "Type", "Values": ["Strung"]}], "InvalidFilterOption"),
        ([{"Key": "Tier", "Values": ["Premium"]}], "InvalidFilterOption"),
        ([{"Key": "Name"}], "InvalidFilterValue"),
        ([{"Key": "Path", "Values": ["no-slash"]}], "ValidationException"),
        ([{"Key": "Path", "Values": ["/aws/service"]}], "ValidationException"),
        ([{"Key": "Bogus", "Values": ["x"]}], "ValidationException"),
    ],
)
def test_describe_filter_errors(ssm: Any, filters: list[dict[str, Any]], code: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.describe_parameters(ParameterFilters=filters)
    assert caught_code(exc) == code


def test_describe_paging(ssm: Any) -> None:
    root = f"/dp-{uuid.uuid4().hex[:10]}"
    names = [f"{root}/p{i:02d}" for i in range(12)]
    for name in names:
        ssm.put_parameter(Name=name, Value="v", Type="String")
    filters = [{"Key": "Path", "Values": [root]}]
    first = ssm.describe_parameters(ParameterFilters=filters, MaxResults=5)
    assert [p["Name"] for p in first["Parameters"]] == names[:5]
    second = ssm.describe_parameters(ParameterFilters=filters, MaxResults=5, NextToken=first["NextToken"])
    assert [p["Name"] for p in second["Parameters"]] == names[5:10]
    default = ssm.describe_parameters(ParameterFilters=filters)
    assert len(default["Parameters"]) == 10
    assert "NextToken" in default
    assert describe(ssm, ParameterFilters=filters) == names
    with pytest.raises(ClientError) as exc:
        ssm.describe_parameters(MaxResults=51)
    assert caught_code(exc) == "ValidationException"
