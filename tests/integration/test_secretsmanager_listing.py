"""ListSecrets and BatchGetSecretValue through boto3 against a real server: every filter key with
"!" negation, sorting, MaxResults / NextToken paging, IncludePlannedDeletion, and BatchGetSecretValue by
ids or by filters with its per-secret Errors list.

Each test works in a region of its own, so it sees exactly the secrets it made.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.rotation import wait_for
from tests.support.server import KhoaServer, fresh_region


@pytest.fixture
def region() -> str:
    return fresh_region()


@pytest.fixture
def sm(server: KhoaServer, region: str) -> Any:
    return server.client("secretsmanager", region=region)


def names(sm: Any, **kwargs: Any) -> list[str]:
    found: list[str] = []
    for page in sm.get_paginator("list_secrets").paginate(**kwargs):
        found += [s["Name"] for s in page["SecretList"]]
    return found


def by_filter(sm: Any, key: str, *values: str) -> set[str]:
    return set(names(sm, Filters=[{"Key": key, "Values": list(values)}]))


@pytest.fixture
def catalogue(sm: Any) -> None:
    sm.create_secret(
        Name="prod/db/Password",
        SecretString="v",
        Description="Database credentials for Production",
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "Payments"}],
    )
    sm.create_secret(
        Name="prod/api-key",
        SecretString="v",
        Description="third-party API key",
        Tags=[{"Key": "env", "Value": "prod"}],
    )
    sm.create_secret(
        Name="staging/db/Password",
        SecretString="v",
        Description="database credentials for staging",
        Tags=[{"Key": "env", "Value": "staging"}, {"Key": "Owner", "Value": "alice"}],
    )
    sm.create_secret(Name="Production-legacy", SecretString="v")


def test_list_entry_fields(sm: Any) -> None:
    created = sm.create_secret(
        Name="entry", SecretString="v", Description="d", Tags=[{"Key": "k", "Value": "v"}]
    )
    entry = sm.list_secrets()["SecretList"][0]
    assert entry["ARN"] == created["ARN"]
    assert entry["Name"] == "entry"
    assert entry["Description"] == "d"
    assert entry["Tags"] == [{"Key": "k", "Value": "v"}]
    assert entry["SecretVersionsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    assert "VersionIdsToStages" not in entry
    assert {"CreatedDate", "LastChangedDate"} <= set(entry)
    assert "PrimaryRegion" not in entry  # only secrets with replicas have one


@pytest.mark.usefixtures("catalogue")
def test_name_filter_is_a_case_sensitive_prefix(sm: Any) -> None:
    assert by_filter(sm, "name", "prod") == {"prod/db/Password", "prod/api-key"}
    assert by_filter(sm, "name", "Prod") == {"Production-legacy"}
    assert by_filter(sm, "name", "prod/db", "staging") == {"prod/db/Password", "staging/db/Password"}
    assert by_filter(sm, "name", "db") == set()  # a prefix, not a substring
    assert by_filter(sm, "name", "!prod") == {"staging/db/Password", "Production-legacy"}


@pytest.mark.usefixtures("catalogue")
def test_description_filter_matches_words_ignoring_case(sm: Any) -> None:
    assert by_filter(sm, "description", "database") == {"prod/db/Password", "staging/db/Password"}
    assert by_filter(sm, "description", "THIRD") == {"prod/api-key"}
    # words of the description, not only a prefix of the whole of it
    assert by_filter(sm, "description", "credentials") == {"prod/db/Password", "staging/db/Password"}
    # negation includes the secret with no description at all
    assert by_filter(sm, "description", "!database") == {"prod/api-key", "Production-legacy"}


@pytest.mark.usefixtures("catalogue")
def test_tag_filters(sm: Any) -> None:
    assert by_filter(sm, "tag-key", "env") == {"prod/db/Password", "prod/api-key", "staging/db/Password"}
    assert by_filter(sm, "tag-key", "own") == set()  # case-sensitive
    assert by_filter(sm, "tag-key", "Own") == {"staging/db/Password"}
    assert by_filter(sm, "tag-key", "!env") == {"Production-legacy"}
    assert by_filter(sm, "tag-value", "prod") == {"prod/db/Password", "prod/api-key"}
    assert by_filter(sm, "tag-value", "Pay", "ali") == {"prod/db/Password", "staging/db/Password"}
    assert by_filter(sm, "tag-value", "!prod") == {"staging/db/Password", "Production-legacy"}


@pytest.mark.usefixtures("catalogue")
def test_filters_combine_with_and(sm: Any) -> None:
    filters = [{"Key": "tag-value", "Values": ["prod"]}, {"Key": "name", "Values": ["prod/db"]}]
    assert set(names(sm, Filters=filters)) == {"prod/db/Password"}
    filters = [{"Key": "tag-key", "Values": ["env"]}, {"Key": "description", "Values": ["!third"]}]
    assert set(names(sm, Filters=filters)) == {"prod/db/Password", "staging/db/Password"}


@pytest.mark.usefixtures("catalogue")
def test_all_filter_matches_words_anywhere(sm: Any) -> None:
    # words of name, description, tag keys and values, not case-sensitive, matched by prefix
    assert by_filter(sm, "all", "password") == {"prod/db/Password", "staging/db/Password"}
    assert by_filter(sm, "all", "PAYMENTS") == {"prod/db/Password"}
    assert by_filter(sm, "all", "legacy") == {"Production-legacy"}
    assert by_filter(sm, "all", "product") == {"prod/db/Password", "Production-legacy"}
    assert by_filter(sm, "all", "owner") == {"staging/db/Password"}
    assert by_filter(sm, "all", "alice") == {"staging/db/Password"}
    # the value is split into words too ("api-key" → api, key), every one of which must match
    assert by_filter(sm, "all", "api-key") == {"prod/api-key"}
    assert by_filter(sm, "all", "nothing") == set()
    # a word must start a word of the secret: "word" is not in "Password"
    assert by_filter(sm, "all", "word") == set()
    assert by_filter(sm, "all", "!password") == {"prod/api-key", "Production-legacy"}


def test_primary_region_filter(sm: Any, region: str) -> None:
    sm.create_secret(Name="here", SecretString="v")
    assert by_filter(sm, "primary-region", region) == {"here"}
    assert by_filter(sm, "primary-region", "us-") == set()
    assert by_filter(sm, "primary-region", "!us-") == {"here"}


def test_owning_service_filter(sm: Any) -> None:
    sm.create_secret(Name="mine", SecretString="v")
    assert by_filter(sm, "owning-service", "rds") == set()
    assert by_filter(sm, "owning-service", "!rds") == {"mine"}


def test_invalid_filters(sm: Any) -> None:
    code = error_code(sm.list_secrets, Filters=[{"Key": "colour", "Values": ["red"]}])
    assert code == "ValidationException"
    code = error_code(sm.list_secrets, Filters=[{"Key": "name", "Values": ["bad;value"]}])
    assert code == "ValidationException"


def test_sorting(server: KhoaServer, sm: Any) -> None:
    for name in ("charlie", "alpha", "bravo"):
        sm.create_secret(Name=name, SecretString="v")
        server.advance_clock(1)  # distinct creation times, by the server's test clock
    assert names(sm) == ["charlie", "alpha", "bravo"]  # by CreatedDate
    assert names(sm, SortOrder="desc") == ["bravo", "alpha", "charlie"]
    assert names(sm, SortBy="name") == ["alpha", "bravo", "charlie"]
    assert names(sm, SortBy="name", SortOrder="desc") == ["charlie", "bravo", "alpha"]
    sm.update_secret(SecretId="alpha", Description="changed last")
    server.advance_clock(1)
    assert names(sm, SortBy="last-changed-date")[-1] == "alpha"
    assert names(sm, SortBy="last-changed-date", SortOrder="desc")[0] == "alpha"
    sm.get_secret_value(SecretId="bravo")
    wait_for(lambda: "LastAccessedDate" in sm.describe_secret(SecretId="bravo"))  # (moments later)
    assert names(sm, SortBy="last-accessed-date")[-1] == "bravo"
    code = error_code(sm.list_secrets, SortBy="size")
    assert code == "ValidationException"


def test_paging(sm: Any) -> None:
    created = [f"page-{i:02d}" for i in range(23)]
    for name in created:
        sm.create_secret(Name=name, SecretString="v")
    seen: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 5, "SortBy": "name"}
    pages = 0
    while True:
        page = sm.list_secrets(**kwargs)
        pages += 1
        assert len(page["SecretList"]) <= 5
        seen += [s["Name"] for s in page["SecretList"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert seen == created
    assert pages == 5
    # paging a filtered, descending listing
    filtered = names(sm, Filters=[{"Key": "all", "Values": ["page"]}], SortOrder="desc", MaxResults=4)
    assert filtered == list(reversed(created))
    assert error_code(sm.list_secrets, NextToken="garbage") == "InvalidNextTokenException"
    code = error_code(sm.list_secrets, MaxResults=101)
    assert code == "ValidationException"


def test_include_planned_deletion(sm: Any) -> None:
    sm.create_secret(Name="kept", SecretString="v")
    sm.create_secret(Name="doomed", SecretString="v")
    sm.delete_secret(SecretId="doomed", RecoveryWindowInDays=7)
    assert names(sm) == ["kept"]
    assert names(sm, IncludePlannedDeletion=True) == ["kept", "doomed"]
    entry = sm.list_secrets(IncludePlannedDeletion=True)["SecretList"][1]
    assert "DeletedDate" in entry


def test_batch_get_by_ids(sm: Any) -> None:
    a = sm.create_secret(Name="batch-a", SecretString="A")
    sm.create_secret(Name="batch-b", SecretBinary=b"B")
    sm.create_secret(Name="batch-deleted", SecretString="D")
    sm.delete_secret(SecretId="batch-deleted")
    result = sm.batch_get_secret_value(
        SecretIdList=["batch-a", "batch-b", "batch-missing", "batch-deleted", a["ARN"][:-7]]
    )
    values = {(v["Name"], v.get("SecretString"), v.get("SecretBinary")) for v in result["SecretValues"]}
    assert values == {("batch-a", "A", None), ("batch-b", None, b"B")}
    assert len(result["SecretValues"]) == 3  # batch-a twice, by name and by partial ARN
    first = result["SecretValues"][0]
    assert first["VersionStages"] == ["AWSCURRENT"]
    assert first["ARN"] == a["ARN"]
    errors = {e["SecretId"]: e["ErrorCode"] for e in result["Errors"]}
    assert errors == {
        "batch-missing": "ResourceNotFoundException",
        "batch-deleted": "InvalidRequestException",
    }
    assert all(e["Message"] for e in result["Errors"])
    # reading through BatchGetSecretValue counts as access (written moments later)
    wait_for(lambda: "LastAccessedDate" in sm.describe_secret(SecretId="batch-b"))


def test_batch_get_by_filters_with_paging(sm: Any) -> None:
    for i in range(5):
        sm.create_secret(Name=f"app/{i}", SecretString=f"value-{i}")
    sm.create_secret(Name="other", SecretString="x")
    found: dict[str, str] = {}
    kwargs: dict[str, Any] = {"Filters": [{"Key": "name", "Values": ["app/"]}], "MaxResults": 2}
    while True:
        page = sm.batch_get_secret_value(**kwargs)
        assert len(page["SecretValues"]) <= 2
        assert page["Errors"] == []
        found.update({v["Name"]: v["SecretString"] for v in page["SecretValues"]})
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert found == {f"app/{i}": f"value-{i}" for i in range(5)}


def test_batch_get_argument_errors(sm: Any) -> None:
    sm.create_secret(Name="arg", SecretString="v")
    code = error_code(
        sm.batch_get_secret_value, SecretIdList=["arg"], Filters=[{"Key": "name", "Values": ["arg"]}]
    )
    assert code == "InvalidParameterException"
    assert error_code(sm.batch_get_secret_value) == "InvalidParameterException"
    code = error_code(sm.batch_get_secret_value, SecretIdList=["arg"], MaxResults=5)
    assert code == "InvalidParameterException"
    code = error_code(sm.batch_get_secret_value, SecretIdList=[f"s{i}" for i in range(21)])
    assert code == "ValidationException"


def test_batch_get_reports_invalid_ids_per_secret(sm: Any) -> None:
    sm.create_secret(Name="ok", SecretString="v")
    result = sm.batch_get_secret_value(SecretIdList=["ok", "not valid!"])
    assert [v["Name"] for v in result["SecretValues"]] == ["ok"]
    assert result["Errors"][0]["SecretId"] == "not valid!"
    assert result["Errors"][0]["ErrorCode"] == "ValidationException"


def test_regions_are_separate(server: KhoaServer, sm: Any) -> None:
    name = f"regional-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="v")
    other = server.client("secretsmanager", region="ap-southeast-7")
    assert error_code(other.get_secret_value, SecretId=name) == "ResourceNotFoundException"
    assert name not in names(other, Filters=[{"Key": "name", "Values": [name]}])
