"""Parameter Store handlers called as the pipeline calls them, without a server: ``build_service`` over
collaborators built from a migrated SQLite database (parameter store, KMS, the production authoriser)
and a fake Secrets Manager reader where a test needs one.

Authorisation is the pipeline's step (``service.authorizer``); the tests that need it run it
explicitly, as ``KhoaApp._prepare`` does.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from khoa.auth.principal import Principal
from khoa.blocking import WouldBlock, on_the_loop
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.base import Service
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.internal import InternalKms
from khoa.services.ssm import build_service
from khoa.services.ssm.parameters import expire_due
from khoa.services.ssm.references import reader
from khoa.services.ssm.store import NewVersion, ParameterStore, VersionRow
from khoa.storage.database import create_database_engine
from tests.support.handlers import ACCOUNT, OTHER_ACCOUNT, REGION, authorizer, barrier, context, database

SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-AbCdEf"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeSecrets:
    """GetSecretValue as Parameter Store sees it: records each request, knows one secret ``db``."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    refusal: AWSError | None = None

    def __call__(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(params)
        if self.refusal is not None:
            raise self.refusal
        if params["SecretId"] not in ("db", SECRET_ARN):
            raise AWSError("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
        return {
            "ARN": SECRET_ARN,
            "Name": "db",
            "VersionId": "a1b2c3d4-0000-4000-8000-000000000001",
            "SecretString": "s3cr3t-value",
            "VersionStages": [params.get("VersionStage", "AWSCURRENT")],
            "CreatedDate": CREATED,
        }


@dataclass
class Env:
    store: ParameterStore
    secrets: FakeSecrets
    service: Service


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file for the module; each test works on its own copy (migrating is the
    slow part of setting up)."""
    directory = tmp_path_factory.mktemp("ssm-template")
    database(directory).dispose()  # the last connection folds the WAL back into the file
    return directory / "khoa.db"


@pytest.fixture
def env(migrated: Path, tmp_path: Path) -> Env:
    shutil.copyfile(migrated, tmp_path / "khoa.db")
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    auth = authorizer(engine)
    kms = KmsBackend.create(engine, barrier(), auth, cache_seconds=0)
    # A long cache lifetime, so the tests also show that writes clear it (build_service's wrapper).
    store = ParameterStore(engine, cache_seconds=300)
    secrets = FakeSecrets()
    return Env(store, secrets, build_service(store, InternalKms(kms), auth, secrets))


def call(env: Env, operation: str, params: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """Run ``operation``'s handler as the account root (by default) of the test account."""
    return env.service.handlers[operation](context("ssm", operation, **facts), params)


def error(env: Env, operation: str, params: dict[str, Any], **facts: Any) -> str:
    """The AWS error code ``operation`` answers with."""
    with pytest.raises(AWSError) as excinfo:
        call(env, operation, params, **facts)
    return excinfo.value.code


def iam_user() -> Principal:
    """An IAM user of the test account with no IAM policies at all."""
    return Principal(
        account_id=ACCOUNT,
        arn=f"arn:aws:iam::{ACCOUNT}:user/alice",
        user_id="AIDAEXAMPLEUSER00001",
        kind="IAMUser",
        name="alice",
    )


# -- PutParameter / GetParameter ---------------------------------------------------------------------


def test_put_then_get_a_string_and_overwrite_it(env: Env) -> None:
    # A read first caches "no such parameter"; the write must clear it for the next read to see it.
    assert error(env, "GetParameter", {"Name": "/app/db/host"}) == "ParameterNotFound"
    assert call(env, "PutParameter", {"Name": "/app/db/host", "Value": "a", "Type": "String"}) == {
        "Version": 1,
        "Tier": "Standard",
    }
    parameter = call(env, "GetParameter", {"Name": "/app/db/host"})["Parameter"]
    assert parameter["Value"] == "a"
    assert parameter["Version"] == 1
    assert parameter["ARN"] == f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/app/db/host"
    assert error(env, "PutParameter", {"Name": "/app/db/host", "Value": "b"}) == "ParameterAlreadyExists"
    assert (
        call(env, "PutParameter", {"Name": "/app/db/host", "Value": "b", "Overwrite": True})["Version"] == 2
    )
    assert call(env, "GetParameter", {"Name": "/app/db/host"})["Parameter"]["Value"] == "b"
    assert call(env, "GetParameter", {"Name": "/app/db/host:1"})["Parameter"]["Value"] == "a"


def test_parameters_are_per_account_and_region(env: Env) -> None:
    call(env, "PutParameter", {"Name": "shared", "Value": "x", "Type": "String"})
    assert error(env, "GetParameter", {"Name": "shared"}, account=OTHER_ACCOUNT) == "ParameterNotFound"
    assert error(env, "GetParameter", {"Name": "shared"}, region="eu-west-1") == "ParameterNotFound"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Name": "ssm-thing", "Value": "v", "Type": "String"}, "ValidationException"),
        ({"Name": "/aws/mine", "Value": "v", "Type": "String"}, "AccessDeniedException"),
        ({"Name": "a/b", "Value": "v", "Type": "String"}, "ValidationException"),
        ({"Name": "no-type", "Value": "v"}, "ValidationException"),
        (
            {"Name": "p", "Value": "abc", "Type": "String", "AllowedPattern": "[0-9]+"},
            "ParameterPatternMismatchException",
        ),
        ({"Name": "p", "Value": "v", "Type": "String", "KeyId": "alias/aws/ssm"}, "ValidationException"),
        ({"Name": "p", "Value": "x" * 4097, "Type": "String"}, "ValidationException"),
        ({"Name": "p", "Value": "v", "Type": "String", "Policies": "not json"}, "InvalidPolicyTypeException"),
        (
            {"Name": "p", "Value": "v", "Type": "String", "Tags": [{"Key": "aws:x", "Value": "1"}]},
            "ValidationException",
        ),
        (
            {"Name": "/" + "/".join(["l"] * 16), "Value": "v", "Type": "String"},
            "HierarchyLevelLimitExceededException",
        ),
    ],
)
def test_put_refuses_bad_requests(env: Env, params: dict[str, Any], code: str) -> None:
    assert error(env, "PutParameter", params) == code


def test_secure_string_is_encrypted_and_decrypted_through_kms(env: Env) -> None:
    call(env, "PutParameter", {"Name": "/app/password", "Value": "hunter2", "Type": "SecureString"})
    hidden = call(env, "GetParameter", {"Name": "/app/password"})["Parameter"]
    assert hidden["Type"] == "SecureString"
    assert hidden["Value"] != "hunter2"
    assert b"hunter2" not in base64.b64decode(hidden["Value"])
    shown = call(env, "GetParameter", {"Name": "/app/password", "WithDecryption": True})["Parameter"]
    assert shown["Value"] == "hunter2"
    described = call(env, "DescribeParameters", {})["Parameters"]
    assert described[0]["KeyId"] == "alias/aws/ssm"


def test_secure_string_with_an_unknown_key_is_invalid_key_id(env: Env) -> None:
    params = {"Name": "s", "Value": "v", "Type": "SecureString", "KeyId": "alias/nope"}
    assert error(env, "PutParameter", params) == "InvalidKeyId"
    assert error(env, "GetParameter", {"Name": "s"}) == "ParameterNotFound"


def test_get_parameters_splits_found_and_invalid(env: Env) -> None:
    call(env, "PutParameter", {"Name": "b", "Value": "2", "Type": "String"})
    call(env, "PutParameter", {"Name": "a", "Value": "1", "Type": "StringList"})
    result = call(env, "GetParameters", {"Names": ["b", "missing", "a", "b:9", "a:bad:x"]})
    assert [p["Name"] for p in result["Parameters"]] == ["a", "b"]
    assert result["InvalidParameters"] == ["missing", "b:9", "a:bad:x"]


# -- history, labels, deletion -------------------------------------------------------------------------


def test_labels_select_versions_and_history_lists_them(env: Env) -> None:
    call(env, "PutParameter", {"Name": "/cfg", "Value": "one", "Type": "String"})
    call(env, "PutParameter", {"Name": "/cfg", "Value": "two", "Overwrite": True})
    labelled = call(
        env, "LabelParameterVersion", {"Name": "/cfg", "ParameterVersion": 1, "Labels": ["prod", "9bad"]}
    )
    assert labelled == {"InvalidLabels": ["9bad"], "ParameterVersion": 1}
    assert call(env, "GetParameter", {"Name": "/cfg:prod"})["Parameter"]["Value"] == "one"
    history = call(env, "GetParameterHistory", {"Name": "/cfg"})["Parameters"]
    assert [(h["Version"], h["Labels"]) for h in history] == [(1, ["prod"]), (2, [])]
    assert error(env, "LabelParameterVersion", {"Name": "/cfg", "ParameterVersion": 7, "Labels": ["x"]}) == (
        "ParameterVersionNotFound"
    )
    assert call(
        env, "UnlabelParameterVersion", {"Name": "/cfg", "ParameterVersion": 1, "Labels": ["prod", "qa"]}
    ) == {
        "RemovedLabels": ["prod"],
        "InvalidLabels": ["qa"],
    }
    assert error(env, "GetParameter", {"Name": "/cfg:prod"}) == "ParameterVersionNotFound"
    assert error(env, "GetParameterHistory", {"Name": "/cfg", "NextToken": "garbage"}) == "InvalidNextToken"


def test_delete_parameter_and_parameters(env: Env) -> None:
    for name in ("x", "y", "z"):
        call(env, "PutParameter", {"Name": name, "Value": "v", "Type": "String"})
    assert call(env, "DeleteParameter", {"Name": "x"}) == {}
    assert error(env, "GetParameter", {"Name": "x"}) == "ParameterNotFound"
    assert error(env, "DeleteParameter", {"Name": "x"}) == "ParameterNotFound"
    assert error(env, "DeleteParameter", {"Name": "/aws/service/x"}) == "AccessDeniedException"
    assert call(env, "DeleteParameters", {"Names": ["y", "nope", "z"]}) == {
        "DeletedParameters": ["y", "z"],
        "InvalidParameters": ["nope"],
    }
    assert call(env, "DescribeParameters", {})["Parameters"] == []


def test_expire_due_deletes_parameters_whose_expiration_passed(env: Env) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = json.dumps([{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": soon}}])
    call(
        env,
        "PutParameter",
        {"Name": "/temp", "Value": "v", "Type": "String", "Tier": "Advanced", "Policies": policy},
    )
    call(env, "PutParameter", {"Name": "/kept", "Value": "v", "Type": "String"})
    assert expire_due(env.store, datetime.now(UTC).timestamp()) == []
    # A one-level name is stored without its leading slash, as AWS stores it (issue 14).
    assert expire_due(env.store, (datetime.now(UTC) + timedelta(hours=2)).timestamp()) == ["temp"]
    assert error(env, "GetParameter", {"Name": "/temp"}) == "ParameterNotFound"
    assert call(env, "GetParameter", {"Name": "/kept"})["Parameter"]["Value"] == "v"


def _again(version: VersionRow) -> NewVersion:
    """The content of ``version``, to write as a new version."""
    return NewVersion(**{k: v for k, v in asdict(version).items() if k != "version"})


def test_a_write_from_a_stale_read_is_too_many_updates(env: Env) -> None:
    # Two writers read version 1; the second to write must not also write version 2.
    call(env, "PutParameter", {"Name": "/race/p", "Value": "one", "Type": "String"})
    stale = env.store.get(ACCOUNT, REGION, "/race/p")
    assert stale is not None
    first = env.store.version(stale.param_id, 1)
    assert first is not None
    call(env, "PutParameter", {"Name": "/race/p", "Value": "two", "Overwrite": True})
    with pytest.raises(AWSError) as excinfo:
        env.store.add_version(stale, _again(first), None)
    assert excinfo.value.code == "TooManyUpdates"
    assert [v.version for v in env.store.versions(stale.param_id)] == [1, 2]


def test_a_version_is_never_dated_before_the_one_it_follows(env: Env) -> None:
    """A writer reads the clock before the parameter: the one of two racing writers that commits
    second (the higher version) may hold the earlier reading."""
    later, earlier = datetime.now(UTC), datetime.now(UTC) - timedelta(seconds=5)
    call(env, "PutParameter", {"Name": "/order/p", "Value": "one", "Type": "String"}, now=later)
    call(env, "PutParameter", {"Name": "/order/p", "Value": "two", "Overwrite": True}, now=earlier)
    history = call(env, "GetParameterHistory", {"Name": "/order/p"})["Parameters"]
    assert [(h["Version"], h["Value"]) for h in history] == [(1, "one"), (2, "two")]
    assert history[1]["LastModifiedDate"] >= history[0]["LastModifiedDate"]


def test_creating_a_name_created_meanwhile_is_already_exists(env: Env) -> None:
    call(env, "PutParameter", {"Name": "/twice/p", "Value": "one", "Type": "String"})
    row = env.store.get(ACCOUNT, REGION, "/twice/p")
    assert row is not None
    first = env.store.version(row.param_id, 1)
    assert first is not None
    with pytest.raises(AWSError) as excinfo:
        env.store.create(ACCOUNT, REGION, "/twice/p", _again(first), None, {"team": "a"})
    assert excinfo.value.code == "ParameterAlreadyExists"
    assert env.store.tags.of(row.param_id) == {}  # the failed creation wrote nothing


def test_policies_need_the_advanced_tier(env: Env) -> None:
    policy = json.dumps([{"Type": "NoChangeNotification", "Attributes": {"After": "3", "Unit": "Days"}}])
    params = {"Name": "/p", "Value": "v", "Type": "String", "Tier": "Standard", "Policies": policy}
    assert error(env, "PutParameter", params) == "IncompatiblePolicyException"


# -- browsing ------------------------------------------------------------------------------------------


def test_get_parameters_by_path_one_level_recursive_and_pages(env: Env) -> None:
    for name in ("/app/a", "/app/b", "/app/sub/c", "/other/d"):
        call(env, "PutParameter", {"Name": name, "Value": name, "Type": "String"})
    one_level = call(env, "GetParametersByPath", {"Path": "/app"})["Parameters"]
    assert [p["Name"] for p in one_level] == ["/app/a", "/app/b"]
    first = call(env, "GetParametersByPath", {"Path": "/app", "Recursive": True, "MaxResults": 2})
    assert [p["Name"] for p in first["Parameters"]] == ["/app/a", "/app/b"]
    second = call(
        env,
        "GetParametersByPath",
        {"Path": "/app", "Recursive": True, "MaxResults": 2, "NextToken": first["NextToken"]},
    )
    assert [p["Name"] for p in second["Parameters"]] == ["/app/sub/c"]
    assert "NextToken" not in second
    assert error(env, "GetParametersByPath", {"Path": "app"}) == "ValidationException"
    assert error(env, "GetParametersByPath", {"Path": "/app", "NextToken": "garbage"}) == "InvalidNextToken"


def test_describe_parameters_filters(env: Env) -> None:
    call(env, "PutParameter", {"Name": "/svc/url", "Value": "u", "Type": "String"})
    call(env, "PutParameter", {"Name": "/svc/list", "Value": "a,b", "Type": "StringList"})
    typed = call(env, "DescribeParameters", {"ParameterFilters": [{"Key": "Type", "Values": ["StringList"]}]})
    assert [p["Name"] for p in typed["Parameters"]] == ["/svc/list"]
    begins = call(env, "DescribeParameters", {"Filters": [{"Key": "Name", "Values": ["/svc/u"]}]})
    assert [p["Name"] for p in begins["Parameters"]] == ["/svc/url"]
    bad_key = {"ParameterFilters": [{"Key": "Colour", "Values": ["red"]}]}
    assert error(env, "DescribeParameters", bad_key) == "InvalidFilterKey"
    bad_type = {"ParameterFilters": [{"Key": "Type", "Values": ["Number"]}]}
    assert error(env, "DescribeParameters", bad_type) == "InvalidFilterOption"


# -- tags ----------------------------------------------------------------------------------------------


def test_tags_are_added_listed_and_removed(env: Env) -> None:
    call(
        env,
        "PutParameter",
        {"Name": "/t", "Value": "v", "Type": "String", "Tags": [{"Key": "team", "Value": "a"}]},
    )
    resource = {"ResourceType": "Parameter", "ResourceId": "/t"}
    call(
        env,
        "AddTagsToResource",
        {**resource, "Tags": [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "b"}]},
    )
    assert call(env, "ListTagsForResource", resource)["TagList"] == [
        {"Key": "env", "Value": "prod"},
        {"Key": "team", "Value": "b"},
    ]
    call(env, "RemoveTagsFromResource", {**resource, "TagKeys": ["team"]})
    assert call(env, "ListTagsForResource", resource)["TagList"] == [{"Key": "env", "Value": "prod"}]
    assert (
        error(env, "ListTagsForResource", {"ResourceType": "Document", "ResourceId": "/t"})
        == "InvalidResourceType"
    )
    assert (
        error(env, "ListTagsForResource", {"ResourceType": "Parameter", "ResourceId": "/none"})
        == "InvalidResourceId"
    )
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert error(env, "AddTagsToResource", {**resource, "Tags": too_many}) == "TooManyTagsError"


# -- authorisation (the pipeline's step, run explicitly) -----------------------------------------------


def test_authorisation_table_allows_the_root_and_denies_a_user_without_policies(env: Env) -> None:
    params = {"Name": "/app/x", "Value": "v", "Type": "String"}
    env.service.authorizer(context("ssm", "PutParameter"), params)
    with pytest.raises(AWSError) as excinfo:
        env.service.authorizer(context("ssm", "PutParameter", principal=iam_user()), params)
    assert excinfo.value.code == "AccessDeniedException"
    message = excinfo.value.message or ""
    assert "ssm:PutParameter" in message
    assert f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/app/x" in message


# -- Secrets Manager references ------------------------------------------------------------------------


def test_reference_reads_the_secret_through_get_secret_value(env: Env) -> None:
    name = "/aws/reference/secretsmanager/db"
    parameter = call(env, "GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]
    assert env.secrets.requests == [{"SecretId": "db"}]
    assert parameter["Value"] == "s3cr3t-value"
    assert parameter["Type"] == "SecureString"
    assert parameter["Version"] == 0
    assert parameter["ARN"] == SECRET_ARN
    assert parameter["LastModifiedDate"] == CREATED
    source = json.loads(parameter["SourceResult"])
    assert source["CreatedDate"] == CREATED.timestamp()
    assert "Selector" not in parameter


def test_reference_selectors_become_a_stage_or_a_version_id(env: Env) -> None:
    base = "/aws/reference/secretsmanager/"
    staged = call(env, "GetParameter", {"Name": base + "db:AWSPREVIOUS", "WithDecryption": True})["Parameter"]
    assert staged["Selector"] == ":AWSPREVIOUS"
    version_id = "a1b2c3d4-0000-4000-8000-000000000001"
    call(env, "GetParameter", {"Name": f"{base}db:{version_id}", "WithDecryption": True})
    call(env, "GetParameter", {"Name": f"{base}{SECRET_ARN}:AWSCURRENT", "WithDecryption": True})
    assert env.secrets.requests == [
        {"SecretId": "db", "VersionStage": "AWSPREVIOUS"},
        {"SecretId": "db", "VersionId": version_id},
        {"SecretId": SECRET_ARN, "VersionStage": "AWSCURRENT"},
    ]


def test_reference_errors(env: Env) -> None:
    base = "/aws/reference/secretsmanager/"
    assert error(env, "GetParameter", {"Name": base + "db"}) == "ValidationException"
    assert env.secrets.requests == []  # refused before Secrets Manager is asked
    assert error(env, "GetParameter", {"Name": base + "nope", "WithDecryption": True}) == "ParameterNotFound"
    result = call(env, "GetParameters", {"Names": [base + "db", base + "nope"], "WithDecryption": True})
    assert [p["Name"] for p in result["Parameters"]] == [base + "db"]
    assert result["InvalidParameters"] == [base + "nope"]
    env.secrets.refusal = AWSError("InvalidRequestException", "marked for deletion")
    assert error(env, "GetParameter", {"Name": base + "db", "WithDecryption": True}) == "ParameterNotFound"
    env.secrets.refusal = AWSError("AccessDeniedException", "not authorized")
    assert (
        error(env, "GetParameter", {"Name": base + "db", "WithDecryption": True}) == "AccessDeniedException"
    )


def test_reader_authorises_then_runs_get_secret_value_as_secrets_manager() -> None:
    seen: list[tuple[str, str, str]] = []

    def check(ctx: RequestContext, params: dict[str, Any]) -> None:
        seen.append(("check", ctx.service, ctx.operation))
        if params["SecretId"] == "forbidden":
            raise AWSError("AccessDeniedException", "denied")

    def get_secret_value(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        seen.append(("handler", ctx.service, ctx.operation))
        return {"ARN": SECRET_ARN, "SecretString": "v", "CreatedDate": CREATED}

    secrets = Service(
        name="secretsmanager",
        signing_name="secretsmanager",
        target_prefix="secretsmanager",
        model=ServiceModel("secretsmanager"),
        handlers={"GetSecretValue": get_secret_value},
        authorizer=AuthorizationTable(
            "secretsmanager", {"GetSecretValue": rule(check, "secretsmanager:GetSecretValue")}
        ),
    )
    read = reader(secrets)
    ssm_ctx = context("ssm", "GetParameter")
    assert read(ssm_ctx, {"SecretId": "db"})["SecretString"] == "v"
    assert seen == [
        ("check", "secretsmanager", "GetSecretValue"),
        ("handler", "secretsmanager", "GetSecretValue"),
    ]
    assert (ssm_ctx.service, ssm_ctx.operation) == (
        "ssm",
        "GetParameter",
    )  # the caller's context is untouched
    seen.clear()
    with pytest.raises(AWSError) as excinfo:
        read(ssm_ctx, {"SecretId": "forbidden"})
    assert excinfo.value.code == "AccessDeniedException"
    assert seen == [("check", "secretsmanager", "GetSecretValue")]  # the handler never ran


# -- Listing matches names, paths, tag values and key IDs in case too, on every database ----------------


def _version(key_id: str | None = None) -> NewVersion:
    return NewVersion(
        param_type="SecureString" if key_id else "String",
        value=None if key_id else "v",
        ciphertext=b"c" if key_id else None,
        key_id=key_id,
        description=None,
        allowed_pattern=None,
        data_type="text",
        tier="Standard",
        policies=None,
        modified_at=CREATED.timestamp(),
        modified_by=f"arn:aws:iam::{ACCOUNT}:root",
    )


def test_listing_prefixes_and_substrings_match_case_on_sqlite_and_postgresql(store_engine: Any) -> None:
    """SQLite's LIKE ignores ASCII case and PostgreSQL's doesn't: every prefix and substring match of the
    listing must give PostgreSQL's answer on both (parameter names are case-sensitive in AWS, and
    GetParametersByPath is authorised on the path as asked, so ``/prod`` must not list ``/Prod/...``)."""
    from khoa.services.ssm.store import Filter

    store = ParameterStore(store_engine, cache_seconds=0)
    store.create(ACCOUNT, REGION, "/Prod/db/password", _version("alias/Team"), None, {"env": "Prod"})
    store.create(ACCOUNT, REGION, "/prod_x/other", _version(), None, {"env": "prod"})
    store.create(ACCOUNT, REGION, "Flat", _version(), None, {})

    def listed(*filters: Filter) -> list[str]:
        page, _ = store.listing.page(ACCOUNT, REGION, list(filters), None, 50)
        return [row.name for row, _ in page]

    assert listed(Filter("Path", "Recursive", ("/Prod",))) == ["/Prod/db/password"]
    assert listed(Filter("Path", "Recursive", ("/prod",))) == []
    assert listed(Filter("Path", "Recursive", ("/PROD/db",))) == []
    assert listed(Filter("Path", "OneLevel", ("/prod/db",))) == []
    assert listed(Filter("Name", "BeginsWith", ("/Prod",))) == ["/Prod/db/password"]
    assert listed(Filter("Name", "BeginsWith", ("prod",))) == ["/prod_x/other"]  # "/" optional, "_" literal
    assert listed(Filter("Name", "BeginsWith", ("/PROD",))) == []
    assert listed(Filter("Name", "BeginsWith", ("flat",))) == []
    assert listed(Filter("Name", "Contains", ("db/pass",))) == ["/Prod/db/password"]
    assert listed(Filter("Name", "Contains", ("DB/PASS",))) == []
    assert listed(Filter("Name", "Contains", ("/flat",))) == []
    assert listed(Filter("Name", "Contains", ("/Flat",))) == ["Flat"]
    assert listed(Filter("tag:env", "BeginsWith", ("Pro",))) == ["/Prod/db/password"]
    assert listed(Filter("tag:env", "BeginsWith", ("pro",))) == ["/prod_x/other"]
    assert listed(Filter("KeyId", "BeginsWith", ("alias/T",))) == ["/Prod/db/password"]
    assert listed(Filter("KeyId", "BeginsWith", ("ALIAS/",))) == []
    assert listed(Filter("Type", "BeginsWith", ("string",))) == []


def test_listing_statements_stay_bounded_whatever_the_filters(tmp_path: Path) -> None:
    """DescribeParameters' filters used to become SQL value by value: 1,000 tag filters made SQLite
    refuse the statement (an "outage", 503) and 50 tag filters of 50 prefixes took two seconds to
    build and plan, on the event loop. More tag filters than a parameter can have tags match nothing
    without a query; tag prefixes past a bound are compared on the rows the SQL finds; a large
    listing moves off the event loop (khoa.blocking). The answers are the same."""
    from khoa.services.ssm.store import Filter

    engine = database(tmp_path)
    store = ParameterStore(engine, cache_seconds=0)
    store.create(ACCOUNT, REGION, "/app/one", _version(), None, {"env": "prod", "team": "blue"})
    store.create(ACCOUNT, REGION, "/app/two", _version(), None, {"env": "dev", "team": "blue"})
    store.create(ACCOUNT, REGION, "/app/three", _version(), None, {"env": "prod"})
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    def listed(*filters: Filter, limit: int = 50) -> list[str]:
        names: list[str] = []
        after = None
        while True:
            page, more = store.listing.page(ACCOUNT, REGION, list(filters), after, limit)
            names += [row.name for row, _ in page]
            if not more:
                return names
            after = page[-1][0].name

    prefixes = tuple(f"x{i:02d}" for i in range(49))
    event.listen(engine, "before_cursor_execute", record)
    try:
        env = Filter("tag:env", "BeginsWith", (*prefixes, "pr"))
        team = Filter("tag:team", "BeginsWith", (*prefixes, "bl"))
        assert listed(env, team) == ["/app/one"]
        assert listed(env, team, limit=1) == ["/app/one"]
        assert listed(env, Filter("tag:team", "Equals", ("blue", "red"))) == ["/app/one"]
        assert listed(Filter("tag:env", "BeginsWith", ("p", "pr", "prod", "p"))) == ["/app/one", "/app/three"]
        fifty = [Filter(f"tag:k{i}", "BeginsWith", prefixes) for i in range(48)] + [env, team]
        assert listed(*fifty) == []
        assert max(statement.count(" LIKE ") for statement in statements) <= 50
        statements.clear()
        assert listed(*[Filter(f"tag:k{i}", "Equals", ()) for i in range(1000)]) == []
        assert statements == []  # no parameter has more than 50 tags: nothing to ask the database
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with on_the_loop(), pytest.raises(WouldBlock):
        store.listing.page(ACCOUNT, REGION, fifty, None, 10)
    with on_the_loop():
        page, _ = store.listing.page(ACCOUNT, REGION, [Filter("tag:env", "Equals", ("prod",))], None, 10)
    assert [row.name for row, _ in page] == ["/app/one", "/app/three"]
