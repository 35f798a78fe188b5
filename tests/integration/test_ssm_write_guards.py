"""Parameter Store requests that did more than they said:

- DeleteParameter of a name with a version or label selector (``/p:1``, ``/p:label``) deleted the whole
  parameter; AWS deletes whole parameters only, so such a name names no parameter (ParameterNotFound,
  as DeleteParameters lists it among InvalidParameters).
- Tag keys that differ only in case were one condition key to policies (the last one's value winning);
  a request carrying such keys, or adding one beside a key the parameter has, is refused.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import error_code, refused
from tests.support.iam import allow, deny
from tests.support.identity import new_user
from tests.support.names import parameter_name
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def test_delete_parameter_with_a_selector_deletes_nothing(ssm: Any) -> None:
    name = parameter_name("versions")
    ssm.put_parameter(Name=name, Value="one", Type="String")
    ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["first"])
    for selected in (f"{name}:1", f"{name}:2", f"{name}:first"):
        assert error_code(ssm.delete_parameter, Name=selected) == "ParameterNotFound"
        assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "two"
    assert len(ssm.get_parameter_history(Name=name)["Parameters"]) == 2
    # As DeleteParameters answers the same names.
    answer = ssm.delete_parameters(Names=[f"{name}:1", f"{name}:first"])
    assert answer["DeletedParameters"] == []
    assert sorted(answer["InvalidParameters"]) == sorted([f"{name}:1", f"{name}:first"])
    ssm.delete_parameter(Name=name)
    assert error_code(ssm.get_parameter, Name=name) == "ParameterNotFound"


def test_tag_keys_differing_only_in_case_are_refused(server: KhoaServer, iam: Any, ssm: Any) -> None:
    user = new_user(
        server,
        iam,
        allow("ssm:*"),
        deny(
            ["ssm:PutParameter", "ssm:AddTagsToResource"],
            Condition={"StringEquals": {"aws:RequestTag/env": "prod"}},
        ),
    )
    client = user.client("ssm")
    name = parameter_name("tagged")
    variants = [{"Key": "env", "Value": "prod"}, {"Key": "ENV", "Value": "dev"}]
    for caller in (client, ssm):
        code, message = refused(caller.put_parameter, Name=name, Value="v", Type="String", Tags=variants)
        assert code == "ValidationException"
        assert "env" in message and "ENV" in message
    assert error_code(ssm.get_parameter, Name=name) == "ParameterNotFound"
    # A key given twice is one tag with its last value (test_ssm_tags_names), and is judged on that value.
    twice = [{"Key": "env", "Value": "dev"}, {"Key": "env", "Value": "prod"}]
    code = error_code(client.put_parameter, Name=name, Value="v", Type="String", Tags=twice)
    assert code == "AccessDeniedException"
    # The Deny still applies to a plain request.
    code = error_code(
        client.put_parameter, Name=name, Value="v", Type="String", Tags=[{"Key": "env", "Value": "prod"}]
    )
    assert code == "AccessDeniedException"

    # A tag whose key differs only in case from one the parameter has: refused, its tag unchanged.
    ssm.put_parameter(
        Name=name, Value="top", Type="String", Tags=[{"Key": "classification", "Value": "restricted"}]
    )
    reader = new_user(
        server,
        iam,
        allow("ssm:GetParameter"),
        deny(
            "ssm:GetParameter",
            Condition={"StringEquals": {"ssm:resourceTag/classification": "restricted"}},
        ),
    )
    assert error_code(reader.client("ssm").get_parameter, Name=name) == "AccessDeniedException"
    code = error_code(
        ssm.add_tags_to_resource,
        ResourceType="Parameter",
        ResourceId=name,
        Tags=[{"Key": "Classification", "Value": "public"}],
    )
    assert code == "ValidationException"
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "classification", "Value": "restricted"}
    ]
    assert error_code(reader.client("ssm").get_parameter, Name=name) == "AccessDeniedException"
    # The key as it is spelt is changed as before.
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId=name, Tags=[{"Key": "classification", "Value": "internal"}]
    )
    assert reader.client("ssm").get_parameter(Name=name)["Parameter"]["Value"] == "top"


def test_an_account_keeps_at_most_its_quota_of_parameters_per_tier(fresh_server: KhoaServer) -> None:
    """AWS's quotas: 10,000 standard and 100,000 advanced parameters per account and Region; the next
    one is refused with ParameterLimitExceeded (the rows up to the quota are written directly)."""
    server = fresh_server.start()
    ssm = server.client("ssm")
    ssm.put_parameter(Name="/quota/first", Value="v", Type="String")
    with sqlite3.connect(server.data_dir / "khoa.db", timeout=30) as conn:
        conn.executemany(
            "INSERT INTO ssm_parameters (param_id, account_id, region, name, parent_path, version, tier) "
            "VALUES (?, ?, ?, ?, '/quota', 1, 'Standard')",
            [(str(uuid.uuid4()), ACCOUNT_ID, REGION, f"/quota/p{n}") for n in range(9_999)],
        )
    with pytest.raises(ClientError) as caught:
        ssm.put_parameter(Name="/quota/one-too-many", Value="v", Type="String")
    assert caught.value.response["Error"]["Code"] == "ParameterLimitExceeded"
    # An overwrite is no new parameter, and the advanced tier has a quota of its own.
    ssm.put_parameter(Name="/quota/first", Value="w", Type="String", Overwrite=True)
    ssm.put_parameter(Name="/quota/advanced", Value="v", Type="String", Tier="Advanced")
    ssm.delete_parameter(Name="/quota/first")
    ssm.put_parameter(Name="/quota/one-too-many", Value="v", Type="String")
