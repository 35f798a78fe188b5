"""STS handlers called as the pipeline calls them, without a server: ``build_service(sts)`` over a
migrated SQLite database, with the roles made by the IAM service built over the same database.

AssumeRole's authorisation step finds the role and hands it to the handler, so the tests that assume a
role run the step first (``service.authorizer``), exactly as ``KhoaApp._prepare`` does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from khoa.access.authorize import Authorizer
from khoa.access.directory import Directory
from khoa.auth.credentials import CredentialStore
from khoa.auth.principal import Principal
from khoa.protocol.errors import AWSError
from khoa.services import iam, sts
from khoa.services.base import Service
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.store import IamStore
from khoa.services.sts.backend import StsBackend
from khoa.services.sts.store import StsStore
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.handlers import ACCOUNT, OTHER_ACCOUNT, barrier, context, database

ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/app/deployer"


def _policy(effect: str, action: str, **extra: Any) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": action, **extra}]})


TRUST = _policy("Allow", "sts:*", Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})


class Env:
    def __init__(self, path: Path, *, dev: bool = False) -> None:
        engine = create_database_engine(f"sqlite:///{path}")
        seal = barrier()
        authorizer = Authorizer(Directory(engine, cache_seconds=0), allow_everything=dev)
        credentials = CredentialStore(engine, seal, 0)
        self.directory, self.credentials = authorizer.directory, credentials
        self.sts: Service = sts.build_service(StsBackend(StsStore(engine, seal), credentials, authorizer))
        self.iam: Service = iam.build_service(IamBackend(IamStore(engine), seal, authorizer, credentials))

    def iam_call(self, operation: str, **params: Any) -> dict[str, Any]:
        return self.iam.handlers[operation](context("iam", operation), params)

    def call(self, operation: str, principal: Principal | None = None, **params: Any) -> dict[str, Any]:
        """Authorise, then run the handler, with one request context (the pipeline's order)."""
        ctx = context("sts", operation, principal=principal)
        self.sts.authorizer(ctx, params)
        return self.sts.handlers[operation](ctx, params)

    def error(self, operation: str, principal: Principal | None = None, **params: Any) -> str:
        with pytest.raises(AWSError) as excinfo:
            self.call(operation, principal, **params)
        return excinfo.value.code

    def user(self, name: str, *policies: str) -> Principal:
        """A new IAM user with the given inline policies, as a request principal."""
        user = self.iam_call("CreateUser", UserName=name)["User"]
        for i, document in enumerate(policies):
            self.iam_call("PutUserPolicy", UserName=name, PolicyName=f"p{i}", PolicyDocument=document)
        return Principal(
            account_id=ACCOUNT,
            arn=user["Arn"],
            user_id=user["UserId"],
            kind="IAMUser",
            name=name,
            principal_id=user["UserId"],
        )


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sts-template")
    engine = database(directory)
    with engine.begin() as conn:
        conn.execute(insert(schema.accounts).values(account_id=ACCOUNT, name="test", created_at=0.0))
    engine.dispose()
    return directory / "khoa.db"


def _copy(migrated: Path, path: Path) -> Path:
    shutil.copyfile(migrated, path)
    return path


@pytest.fixture
def env(migrated: Path, tmp_path: Path) -> Env:
    env = Env(_copy(migrated, tmp_path / "khoa.db"))
    env.iam_call("CreateRole", RoleName="deployer", Path="/app/", AssumeRolePolicyDocument=TRUST)
    return env


@pytest.fixture
def dev(migrated: Path, tmp_path: Path) -> Env:
    env = Env(_copy(migrated, tmp_path / "dev.db"), dev=True)
    env.iam_call("CreateRole", RoleName="deployer", Path="/app/", AssumeRolePolicyDocument=TRUST)
    return env


def test_get_caller_identity_needs_no_permission(env: Env) -> None:
    nobody = env.user("nobody")
    assert env.call("GetCallerIdentity", nobody) == {
        "UserId": nobody.user_id,
        "Account": ACCOUNT,
        "Arn": nobody.arn,
    }


def test_assume_role_issues_a_session(env: Env) -> None:
    alice = env.user("alice", _policy("Allow", "sts:AssumeRole", Resource=ROLE_ARN))
    result = env.call("AssumeRole", alice, RoleArn=ROLE_ARN, RoleSessionName="deploy-1", DurationSeconds=900)
    credentials = result["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA") and credentials["SessionToken"]
    assert result["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deploy-1"
    assert result["PackedPolicySize"] == 0
    # The new key is known, and the role now reports when it was last used.
    assert env.call("GetAccessKeyInfo", AccessKeyId=credentials["AccessKeyId"]) == {"Account": ACCOUNT}
    assert "LastUsedDate" in env.iam_call("GetRole", RoleName="deployer")["Role"]["RoleLastUsed"]


def test_assume_role_is_refused_without_permission_or_role(env: Env) -> None:
    nobody = env.user("nobody")
    assert env.error("AssumeRole", nobody, RoleArn=ROLE_ARN, RoleSessionName="s") == "AccessDenied"
    alice = env.user("alice", _policy("Allow", "sts:AssumeRole", Resource="*"))
    missing = f"arn:aws:iam::{ACCOUNT}:role/nope"
    assert env.error("AssumeRole", alice, RoleArn=missing, RoleSessionName="s") == "AccessDenied"
    assert (
        env.error("AssumeRole", alice, RoleArn="arn:aws:iam::role", RoleSessionName="s") == "ValidationError"
    )
    # Tags need sts:TagSession too.
    tags = [{"Key": "team", "Value": "a"}]
    assert env.error("AssumeRole", alice, RoleArn=ROLE_ARN, RoleSessionName="s", Tags=tags) == "AccessDenied"


def test_the_root_may_not_assume_roles_except_in_development_mode(env: Env, dev: Env) -> None:
    assert env.error("AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s") == "AccessDenied"
    assert dev.call("AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s")["Credentials"]["AccessKeyId"]


def test_assume_role_bad_inputs(dev: Env) -> None:
    def error(**params: Any) -> str:
        return dev.error("AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s", **params)

    assert error(DurationSeconds=7200) == "ValidationError"  # the role's MaxSessionDuration is 1 hour
    assert error(Policy="{not json") == "MalformedPolicyDocument"
    other = f"arn:aws:iam::{OTHER_ACCOUNT}:policy/p"
    assert error(PolicyArns=[{"arn": other}]) == "InvalidParameterValue"
    assert error(PolicyArns=[{"arn": "arn:aws:iam::aws:policy/NoSuch"}]) == "InvalidParameterValue"
    chained = Principal(
        account_id=ACCOUNT,
        arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/s",
        user_id="AROAEXAMPLE:s",
        kind="AssumedRole",
        name="deployer",
    )
    dev.iam_call("UpdateRole", RoleName="deployer", MaxSessionDuration=7200)
    code = dev.error("AssumeRole", chained, RoleArn=ROLE_ARN, RoleSessionName="s", DurationSeconds=7200)
    assert code == "ValidationError"  # role chaining is limited to one hour


def test_managed_session_policies(dev: Env) -> None:
    own = dev.iam_call(
        "CreatePolicy", PolicyName="narrow", PolicyDocument=_policy("Allow", "s3:Get*", Resource="*")
    )
    result = dev.call(
        "AssumeRole",
        RoleArn=ROLE_ARN,
        RoleSessionName="s",
        PolicyArns=[{"arn": own["Policy"]["Arn"]}, {"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
    )
    assert result["PackedPolicySize"] > 0


def _session_allows(env: Env, principal: Principal, action: str) -> bool:
    """Whether the session's session policies allow ``action`` (on any resource): evaluated with the
    role's identity policies allowing everything, so only the session policies decide."""
    decider = Authorizer(env.directory)
    return decider.decide(context(action.split(":")[0], "Op", principal=principal), action, "*").allowed


def test_managed_session_policies_apply_as_their_current_default_version(dev: Env) -> None:
    """A session keeps its managed session policies' ARNs, not their documents: a new default version
    narrows a live session, and a deleted one allows nothing (fail closed); the inline policy and the
    other managed ones still apply. Sessions stored with the older shape (documents) still read."""
    dev.iam_call(
        "PutRolePolicy",
        RoleName="deployer",
        PolicyName="all",
        PolicyDocument=_policy("Allow", "*", Resource="*"),
    )
    arn = dev.iam_call(
        "CreatePolicy", PolicyName="scope", PolicyDocument=_policy("Allow", "kms:Decrypt", Resource="*")
    )["Policy"]["Arn"]
    inline = _policy("Allow", "ssm:GetParameter", Resource="*")

    def start(**params: Any) -> Principal:
        result = dev.call("AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s", **params)
        found = dev.credentials.lookup(result["Credentials"]["AccessKeyId"])
        assert found is not None
        return found.principal

    both = start(Policy=inline, PolicyArns=[{"arn": arn}])
    alone = start(PolicyArns=[{"arn": arn}])
    aws = start(PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}])
    assert both.session_policy is not None and arn in both.session_policy
    assert "kms:Decrypt" not in both.session_policy  # the ARN, not the document
    for principal in (both, alone):
        assert _session_allows(dev, principal, "kms:Decrypt")
        assert not _session_allows(dev, principal, "kms:Encrypt")
    assert _session_allows(dev, both, "ssm:GetParameter")
    assert not _session_allows(dev, alone, "ssm:GetParameter")
    assert _session_allows(dev, aws, "kms:DescribeKey") and not _session_allows(dev, aws, "kms:Decrypt")

    # A new default version narrows the live sessions; setting the old one back widens them again.
    dev.iam_call(
        "CreatePolicyVersion",
        PolicyArn=arn,
        PolicyDocument=_policy("Allow", "kms:Encrypt", Resource="*"),
        SetAsDefault=True,
    )
    for principal in (both, alone):
        assert not _session_allows(dev, principal, "kms:Decrypt")
        assert _session_allows(dev, principal, "kms:Encrypt")
    dev.iam_call("SetDefaultPolicyVersion", PolicyArn=arn, VersionId="v1")
    assert _session_allows(dev, alone, "kms:Decrypt")

    # Deleted: that part allows nothing, never everything.
    dev.iam_call("DeletePolicyVersion", PolicyArn=arn, VersionId="v2")
    dev.iam_call("DeletePolicy", PolicyArn=arn)
    assert not _session_allows(dev, alone, "kms:Decrypt")
    assert not _session_allows(dev, alone, "ssm:GetParameter")
    assert not _session_allows(dev, both, "kms:Decrypt")
    assert _session_allows(dev, both, "ssm:GetParameter")

    # A session stored before (the documents merged into one) reads as it did.
    merged = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"},
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
            ],
        }
    )
    old = dataclasses.replace(alone, session_policy=merged)
    assert _session_allows(dev, old, "kms:Decrypt") and _session_allows(dev, old, "ssm:GetParameter")
    assert not _session_allows(dev, old, "kms:Encrypt")
    # Stored session policies that cannot be read deny everything.
    broken = dataclasses.replace(alone, session_policy='{"KhoaSessionPolicies": 1, "PolicyArns": "x"}')
    assert not _session_allows(dev, broken, "ssm:GetParameter")


def test_get_access_key_info(env: Env) -> None:
    key = env.iam_call("CreateAccessKey")["AccessKey"]["AccessKeyId"]
    assert env.call("GetAccessKeyInfo", AccessKeyId=key) == {"Account": ACCOUNT}
    assert env.error("GetAccessKeyInfo", AccessKeyId="AKIAUNKNOWN000000000") == "InvalidParameterValue"
    nobody = env.user("nobody")
    assert env.error("GetAccessKeyInfo", nobody, AccessKeyId=key) == "AccessDenied"
