"""Parameter Store's authorisation holds on what is served, with the condition keys AWS documents.

- Parameter names are case-sensitive in AWS (PutParameter's API reference, "Naming Constraints"), and
  GetParametersByPath is authorised on the path asked for (user guide, "How Parameter Store authorizes
  parameter retrieval"): ``/prod`` names another hierarchy than ``/Prod`` and lists nothing of it, so a
  Deny on ``parameter/Prod*`` holds. Every prefix and substring match of the listings is case-sensitive
  (it was not on SQLite, whose LIKE ignores ASCII case).
- A path or name is authorised exactly as it is served: the spaces removed from the ends of a Path
  before listing are removed before authorising it too.
- ``ssm:Recursive`` (GetParametersByPath), ``ssm:Overwrite`` and ``ssm:Policies`` (PutParameter) are set
  as the user guide's "Preventing access to Parameter Store API operations" uses them, a Boolean member
  left out being false; and ``aws:TagKeys`` for RemoveTagsFromResource (Service Authorization
  Reference, "Actions, resources, and condition keys for AWS Systems Manager").

One shared server (the session's); every test works under its own hierarchy.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.errors import refused
from tests.support.iam import allow, deny
from tests.support.identity import Caller, new_user, parameter_arn
from tests.support.names import parameter_name, unique
from tests.support.server import KhoaServer

DENIED = "AccessDeniedException"


def listed(response: dict[str, Any]) -> list[str]:
    return sorted(p["Name"] for p in response["Parameters"])


@pytest.fixture(scope="module")
def tree(server: KhoaServer) -> str:
    """A hierarchy of this module's own: ``<tree>/Prod/...`` (denied below) and ``<tree>/dev/...``."""
    root = parameter_name("authz")
    ssm = server.client("ssm")
    ssm.put_parameter(Name=f"{root}/Prod/db/password", Value="prod-master-pw", Type="SecureString")
    ssm.put_parameter(Name=f"{root}/Prod/top", Value="prod-top", Type="String")
    ssm.put_parameter(Name=f"{root}/dev/db/password", Value="dev-pw", Type="String")
    return root


def prod_denied(server: KhoaServer, iam: Any, tree: str, *allowed: str) -> Caller:
    """A user allowed ``allowed`` everywhere and denied every ``ssm:`` action on ``<tree>/Prod``."""
    return new_user(
        server,
        iam,
        allow(list(allowed)),
        deny("ssm:*", [parameter_arn(f"{tree}/Prod"), parameter_arn(f"{tree}/Prod/*")]),
    )


# -- names and paths are case-sensitive ------------------------------------------------------------------


def test_a_path_in_another_case_lists_nothing_past_a_deny(server: KhoaServer, iam: Any, tree: str) -> None:
    ssm = prod_denied(server, iam, tree, "ssm:GetParametersByPath").client("ssm")
    code, message = refused(ssm.get_parameters_by_path, Path=f"{tree}/Prod", Recursive=True)
    assert code == DENIED and "explicit deny" in message
    # /prod, /PROD are other hierarchies (empty), not /Prod seen past its Deny.
    for path in (f"{tree}/prod", f"{tree}/PROD", f"{tree}/pROD/db", f"{tree}/prod/"):
        assert listed(ssm.get_parameters_by_path(Path=path, Recursive=True)) == [], path
        assert listed(ssm.get_parameters_by_path(Path=path)) == [], path
    # The allowed hierarchy still lists, recursively and one level down.
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/dev", Recursive=True)) == [
        f"{tree}/dev/db/password"
    ]
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/dev/db")) == [f"{tree}/dev/db/password"]


def test_describe_filters_match_case(ssm: Any, tree: str) -> None:
    tag_key = unique("team")
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId=f"{tree}/Prod/top", Tags=[{"Key": tag_key, "Value": "Platform"}]
    )

    def described(*filters: dict[str, Any]) -> list[str]:
        return listed(ssm.describe_parameters(ParameterFilters=list(filters), MaxResults=50))

    prod = [f"{tree}/Prod/db/password", f"{tree}/Prod/top"]
    assert described({"Key": "Name", "Option": "BeginsWith", "Values": [f"{tree}/Prod"]}) == prod
    assert described({"Key": "Name", "Option": "BeginsWith", "Values": [f"{tree}/prod"]}) == []
    assert described({"Key": "Name", "Option": "Contains", "Values": [f"{tree}/Prod/db"]}) == prod[:1]
    assert described({"Key": "Name", "Option": "Contains", "Values": [f"{tree}/PROD/DB"]}) == []
    assert described({"Key": "Path", "Option": "Recursive", "Values": [f"{tree}/Prod"]}) == prod
    assert described({"Key": "Path", "Option": "Recursive", "Values": [f"{tree}/prod"]}) == []
    assert described({"Key": f"tag:{tag_key}", "Option": "BeginsWith", "Values": ["Plat"]}) == prod[1:]
    assert described({"Key": f"tag:{tag_key}", "Option": "BeginsWith", "Values": ["plat"]}) == []
    in_tree = {"Key": "Name", "Option": "BeginsWith", "Values": [tree]}
    assert described(in_tree, {"Key": "KeyId", "Option": "BeginsWith", "Values": ["alias/aws/"]}) == prod[:1]
    assert described(in_tree, {"Key": "KeyId", "Option": "BeginsWith", "Values": ["ALIAS/AWS/"]}) == []


# -- a path or a name is authorised as it is served ----------------------------------------------------


def test_a_path_is_authorised_without_the_spaces_it_is_listed_without(
    server: KhoaServer, iam: Any, tree: str
) -> None:
    ssm = prod_denied(server, iam, tree, "ssm:GetParametersByPath", "kms:Decrypt").client("ssm")
    for path in (f" {tree}/Prod", f"{tree}/Prod ", f"  {tree}/Prod/  ", f"{tree}/Prod/db "):
        code, message = refused(ssm.get_parameters_by_path, Path=path, Recursive=True, WithDecryption=True)
        served = path.strip(" ").rstrip("/")
        assert code == DENIED, path
        assert f"on resource: {parameter_arn(served)} with an explicit deny" in message, message
    assert listed(ssm.get_parameters_by_path(Path=f" {tree}/dev ", Recursive=True)) == [
        f"{tree}/dev/db/password"
    ]


def test_every_named_operation_is_authorised_on_the_name_it_serves(
    server: KhoaServer, iam: Any, ssm: Any, tree: str
) -> None:
    user = prod_denied(server, iam, tree, "ssm:*", "kms:Decrypt").client("ssm")
    name = f"{tree}/Prod/db/password"
    spaced = f"  {name} "
    calls: list[tuple[str, Any, dict[str, Any]]] = [
        ("GetParameter", user.get_parameter, {"Name": spaced, "WithDecryption": True}),
        ("GetParameters", user.get_parameters, {"Names": [spaced], "WithDecryption": True}),
        ("GetParameterHistory", user.get_parameter_history, {"Name": spaced, "WithDecryption": True}),
        ("LabelParameterVersion", user.label_parameter_version, {"Name": spaced, "Labels": ["x"]}),
        (
            "UnlabelParameterVersion",
            user.unlabel_parameter_version,
            {"Name": spaced, "ParameterVersion": 1, "Labels": ["x"]},
        ),
        ("DeleteParameter", user.delete_parameter, {"Name": spaced}),
        ("DeleteParameters", user.delete_parameters, {"Names": [spaced]}),
        ("PutParameter", user.put_parameter, {"Name": spaced, "Value": "v", "Overwrite": True}),
        (
            "AddTagsToResource",
            user.add_tags_to_resource,
            {"ResourceType": "Parameter", "ResourceId": spaced, "Tags": [{"Key": "k", "Value": "v"}]},
        ),
        (
            "ListTagsForResource",
            user.list_tags_for_resource,
            {"ResourceType": "Parameter", "ResourceId": spaced},
        ),
    ]
    for operation, call, kwargs in calls:
        code, message = refused(call, **kwargs)
        assert code == DENIED, operation
        assert f"ssm:{operation} on resource: {parameter_arn(name)} with an explicit deny" in message
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "prod-master-pw"
    # The same calls on an allowed parameter, its name spaced alike, are served.
    allowed = f"  {tree}/dev/db/password "
    assert user.get_parameter(Name=allowed)["Parameter"]["Value"] == "dev-pw"
    assert user.label_parameter_version(Name=allowed, Labels=["current"])["ParameterVersion"] == 1


# -- condition keys ------------------------------------------------------------------------------------


def test_ssm_recursive_as_the_user_guide_uses_it(server: KhoaServer, iam: Any, tree: str) -> None:
    """The guide's example: a Deny of GetParametersByPath on ``ssm:Recursive = true`` below a level."""
    ssm = new_user(
        server,
        iam,
        allow("ssm:*", parameter_arn("/*")),
        deny(
            "ssm:GetParametersByPath",
            parameter_arn(f"{tree}/Prod/*"),
            Condition={"StringEquals": {"ssm:Recursive": ["true"]}},
        ),
    ).client("ssm")
    code, message = refused(ssm.get_parameters_by_path, Path=f"{tree}/Prod/db", Recursive=True)
    assert code == DENIED and "explicit deny" in message
    # Not recursive (said or left out): allowed.
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/Prod/db")) == [f"{tree}/Prod/db/password"]
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/Prod/db", Recursive=False)) == [
        f"{tree}/Prod/db/password"
    ]
    # Recursive elsewhere: allowed.
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/dev", Recursive=True)) == [
        f"{tree}/dev/db/password"
    ]


def test_ssm_recursive_left_out_is_false(server: KhoaServer, iam: Any, tree: str) -> None:
    ssm = new_user(
        server,
        iam,
        allow("ssm:GetParametersByPath", Condition={"StringEquals": {"ssm:Recursive": "false"}}),
    ).client("ssm")
    assert listed(ssm.get_parameters_by_path(Path=f"{tree}/dev/db")) == [f"{tree}/dev/db/password"]
    code, _ = refused(ssm.get_parameters_by_path, Path=f"{tree}/dev", Recursive=True)
    assert code == DENIED


def _expiring() -> str:
    when = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return json.dumps([{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": when}}])


def test_ssm_policies_as_the_user_guide_uses_it(server: KhoaServer, iam: Any, ssm: Any, tree: str) -> None:
    """The guide's example: a Deny of PutParameter on ``ssm:Policies = true``; parameters without
    policies can still be created and updated."""
    user = new_user(
        server,
        iam,
        allow("ssm:PutParameter", parameter_arn(f"{tree}/*")),
        deny(
            "ssm:PutParameter",
            parameter_arn(f"{tree}/*"),
            Condition={"StringEquals": {"ssm:Policies": ["true"]}},
        ),
    ).client("ssm")
    name = f"{tree}/policies/{unique('p')}"
    code, message = refused(
        user.put_parameter, Name=name, Value="v", Type="String", Tier="Advanced", Policies=_expiring()
    )
    assert code == DENIED and "explicit deny" in message
    assert refused(ssm.get_parameter, Name=name)[0] == "ParameterNotFound"
    assert user.put_parameter(Name=name, Value="v", Type="String", Tier="Advanced")["Version"] == 1
    assert (
        refused(user.put_parameter, Name=name, Value="w", Overwrite=True, Policies=_expiring())[0] == DENIED
    )
    assert user.put_parameter(Name=name, Value="w", Overwrite=True)["Version"] == 2
    entry = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"][0]
    assert entry["Policies"] == []


def test_ssm_overwrite_left_out_is_false(server: KhoaServer, iam: Any, tree: str) -> None:
    """A user who may only create (``ssm:Overwrite = false``) creates without saying Overwrite."""
    user = new_user(
        server,
        iam,
        allow(
            "ssm:PutParameter",
            parameter_arn(f"{tree}/*"),
            Condition={"StringEquals": {"ssm:Overwrite": "false"}},
        ),
    ).client("ssm")
    name = f"{tree}/create-only/{unique('p')}"
    assert user.put_parameter(Name=name, Value="v", Type="String")["Version"] == 1
    assert user.put_parameter(Name=name + "-2", Value="v", Type="String", Overwrite=False)["Version"] == 1
    assert refused(user.put_parameter, Name=name, Value="w", Overwrite=True)[0] == DENIED


def test_remove_tags_sets_aws_tag_keys(server: KhoaServer, iam: Any, ssm: Any, tree: str) -> None:
    name = f"{tree}/tagged/{unique('p')}"
    ssm.put_parameter(
        Name=name,
        Value="v",
        Type="String",
        Tags=[{"Key": "owner", "Value": "team-a"}, {"Key": "scratch", "Value": "1"}],
    )
    user = new_user(
        server,
        iam,
        allow(["ssm:RemoveTagsFromResource", "ssm:ListTagsForResource"]),
        deny(
            "ssm:RemoveTagsFromResource",
            Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner"]}},
        ),
    ).client("ssm")
    code, _ = refused(
        user.remove_tags_from_resource, ResourceType="Parameter", ResourceId=name, TagKeys=["owner"]
    )
    assert code == DENIED
    user.remove_tags_from_resource(ResourceType="Parameter", ResourceId=name, TagKeys=["scratch"])
    tags = user.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    assert tags == [{"Key": "owner", "Value": "team-a"}]
