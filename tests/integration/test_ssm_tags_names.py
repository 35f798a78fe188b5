"""Parameter tags (Add/Remove/ListTagsForResource) and the parameter name and hierarchy rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code
from tests.support.names import parameter_name
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

# -- tags --------------------------------------------------------------------------------------------


def test_add_list_remove_tags(ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(Name=name, Value="x", Type="String", Tags=[{"Key": "a", "Value": "1"}])
    ssm.add_tags_to_resource(
        ResourceType="Parameter",
        ResourceId=name,
        Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "9"}],
    )
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("a", "9"), ("b", "2")]
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=name, TagKeys=["a", "not-there"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "b", "Value": "2"}
    ]
    # Tags survive updates of the value.
    ssm.put_parameter(Name=name, Value="y", Overwrite=True)
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "b", "Value": "2"}
    ]


def test_tags_by_arn(ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(Name=name, Value="x", Type="String")
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}"
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=arn, Tags=[{"Key": "k", "Value": "v"}])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "k", "Value": "v"}
    ]


def test_tag_errors(ssm: Any) -> None:
    name = parameter_name("tn")
    for call in (
        lambda: ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name),
        lambda: ssm.add_tags_to_resource(
            ResourceType="Parameter", ResourceId=name, Tags=[{"Key": "k", "Value": "v"}]
        ),
        lambda: ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=name, TagKeys=["k"]),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert caught_code(exc) == "InvalidResourceId"
    ssm.put_parameter(Name=name, Value="x", Type="String")
    with pytest.raises(ClientError) as exc:
        ssm.list_tags_for_resource(ResourceType="Document", ResourceId=name)
    assert caught_code(exc) == "InvalidResourceType"
    with pytest.raises(ClientError) as exc:
        ssm.list_tags_for_resource(ResourceType="NotAType", ResourceId=name)
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.add_tags_to_resource(
            ResourceType="Parameter", ResourceId=name, Tags=[{"Key": "aws:x", "Value": "v"}]
        )
    assert caught_code(exc) == "ValidationException"


def test_fifty_tags(ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(Name=name, Value="x", Type="String")
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId=name, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    )
    with pytest.raises(ClientError) as exc:
        ssm.add_tags_to_resource(
            ResourceType="Parameter", ResourceId=name, Tags=[{"Key": "k50", "Value": "v"}]
        )
    assert caught_code(exc) == "TooManyTagsError"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=parameter_name("tn"),
            Value="x",
            Type="String",
            Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)],
        )
    assert caught_code(exc) == "TooManyTagsError"


# -- names -------------------------------------------------------------------------------------------


def test_fifteen_levels(ssm: Any) -> None:
    root = parameter_name("tn")
    fifteen = root + "".join(f"/l{i}" for i in range(14))
    assert fifteen.count("/") == 15
    ssm.put_parameter(Name=fifteen, Value="x", Type="String")
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=fifteen + "/l15", Value="x", Type="String")
    assert caught_code(exc) == "HierarchyLevelLimitExceededException"


def test_name_length_counts_the_arn(ssm: Any) -> None:
    prefix = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/"
    name = "n" + uuid.uuid4().hex[:8]
    longest = name + "x" * (1011 - len(prefix) - len(name))
    assert len(prefix + longest) == 1011
    ssm.put_parameter(Name=longest, Value="x", Type="String")
    assert ssm.get_parameter(Name=longest)["Parameter"]["Name"] == longest
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=longest + "x", Value="x", Type="String")
    assert caught_code(exc) == "ValidationException"


@pytest.mark.parametrize("name", ["/aws/mine", "aws-flat", "/AWS/Upper", "awsconfig"])
def test_aws_prefix_is_reserved(ssm: Any, name: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="x", Type="String")
    assert caught_code(exc) == "AccessDeniedException"
    assert "reserved parameter name" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        ssm.delete_parameter(Name=name)
    assert caught_code(exc) == "AccessDeniedException"


@pytest.mark.parametrize("name", ["/ssm/mine", "ssm-flat", "/SSMx/y", "SsmThing"])
def test_ssm_prefix_is_refused(ssm: Any, name: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="x", Type="String")
    assert caught_code(exc) == "ValidationException"
    assert 'prefixed with "ssm"' in exc.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    "name", ["/has space/x", "/bad*char", "/double//slash", "/trailing/", "no/leading-slash", "/ünï", "a:b"]
)
def test_invalid_names(ssm: Any, name: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="x", Type="String")
    assert caught_code(exc) == "ValidationException"


def test_names_are_case_sensitive(ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(Name=name + "/Key", Value="upper", Type="String")
    ssm.put_parameter(Name=name + "/key", Value="lower", Type="String")
    assert ssm.get_parameter(Name=name + "/Key")["Parameter"]["Value"] == "upper"
    assert ssm.get_parameter(Name=name + "/key")["Parameter"]["Value"] == "lower"


def test_parameters_are_per_region(server: KhoaServer, ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(Name=name, Value="east", Type="String")
    west = server.client("ssm", region="us-west-2")
    with pytest.raises(ClientError) as exc:
        west.get_parameter(Name=name)
    assert caught_code(exc) == "ParameterNotFound"
    west.put_parameter(Name=name, Value="west", Type="SecureString")
    assert west.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "west"
    assert west.get_parameter(Name=name)["Parameter"]["ARN"].startswith("arn:aws:ssm:us-west-2:")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "east"


def test_duplicate_tag_keys_at_creation_keep_the_last(ssm: Any) -> None:
    name = parameter_name("tn")
    ssm.put_parameter(
        Name=name, Value="x", Type="String", Tags=[{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]
    )
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "k", "Value": "2"}
    ]


def test_spaces_inside_a_name_are_refused_on_read(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name="/has space")
    assert caught_code(exc) == "ValidationException"
    assert ssm.get_parameters(Names=["/has space"])["InvalidParameters"] == ["/has space"]
