"""A tenant's organization never captures the accounts the operator creates (red-team finding: a tenant
that called CreateOrganization before the operator's account did became the management account of every
account `khoa account create` made afterwards, could list them and lock out their root users with a
`Deny *` service control policy).

As on AWS, where an account joins an organization only through its management account's CreateAccount
or by accepting an invitation: `khoa account create` stands in for the installation's first account's
CreateAccount, so a new account joins the first account's organization, if it has one, and never
another. A tenant may still create an organization; it holds the tenant's account alone.

One private server for the module: organizations are installation-wide, and the order in which the
tenant's organization, the accounts and the operator's organization are made is the point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.identity import Caller, create_account
from tests.support.server import ACCOUNT_ID, KhoaServer

SCP = "SERVICE_CONTROL_POLICY"
DENY_EVERYTHING = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
)
DENY_CREATE_KEY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:CreateKey", "Resource": "*"}]}
)


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def account_ids(client: Any) -> set[str]:
    return {a["Id"] for a in client.list_accounts()["Accounts"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(Path(tmp_path_factory.mktemp("org-tenants")) / "data").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def tenant(server: KhoaServer) -> dict[str, Any]:
    """A tenant account (made by the operator) that creates an organization before anyone else, enables
    SCPs and attaches a `Deny *` to its root: everything it would govern would be locked out."""
    caller = create_account(server)
    client = caller.client("organizations")
    org = client.create_organization(FeatureSet="ALL")["Organization"]
    root = client.list_roots()["Roots"][0]
    client.enable_policy_type(RootId=root["Id"], PolicyType=SCP)
    policy_id = client.create_policy(
        Name="lockout", Description="deny everything", Type=SCP, Content=DENY_EVERYTHING
    )["Policy"]["PolicySummary"]["Id"]
    client.attach_policy(PolicyId=policy_id, TargetId=root["Id"])
    return {"caller": caller, "client": client, "org": org, "root": root, "policy": policy_id}


@pytest.fixture(scope="module")
def early(server: KhoaServer, tenant: dict[str, Any]) -> Caller:
    """An account the operator creates after the tenant's organization, while the first account has
    none: it joins no organization."""
    return create_account(server)


@pytest.fixture(scope="module")
def operator_org(server: KhoaServer, tenant: dict[str, Any], early: Caller) -> dict[str, Any]:
    """The installation's first account creates its organization after the tenant's (and after
    ``early`` exists), with SCPs enabled."""
    client = server.client("organizations")
    org = client.create_organization(FeatureSet="ALL")["Organization"]
    root = client.list_roots()["Roots"][0]
    client.enable_policy_type(RootId=root["Id"], PolicyType=SCP)
    return {"client": client, "org": org, "root": root}


@pytest.fixture(scope="module")
def late(server: KhoaServer, operator_org: dict[str, Any]) -> Caller:
    """An account the operator creates once the first account's organization exists."""
    return create_account(server)


def test_a_tenants_organization_does_not_capture_an_account_the_operator_creates_later(
    tenant: dict[str, Any], early: Caller
) -> None:
    client = tenant["client"]
    assert tenant["org"]["MasterAccountId"] == tenant["caller"].account_id
    assert account_ids(client) == {tenant["caller"].account_id}
    with pytest.raises(ClientError) as error:
        client.describe_account(AccountId=early.account_id)
    assert code(error) == "AccountNotFoundException"
    with pytest.raises(ClientError) as error:
        client.attach_policy(PolicyId=tenant["policy"], TargetId=early.account_id)
    assert code(error) == "TargetNotFoundException"
    # the new account is in no organization at all
    with pytest.raises(ClientError) as error:
        early.client("organizations").describe_organization()
    assert code(error) == "AWSOrganizationsNotInUseException"
    # and the `Deny *` on the tenant's root does not reach it
    early.client("kms").create_key(Description="not governed by the tenant")


def test_the_first_accounts_organization_gets_the_accounts_created_after_it(
    tenant: dict[str, Any], early: Caller, operator_org: dict[str, Any], late: Caller
) -> None:
    """Even though the tenant's organization is older, the operator's new accounts join the first
    account's; accounts made before it existed stay outside, as documented."""
    assert operator_org["org"]["MasterAccountId"] == ACCOUNT_ID
    assert operator_org["org"]["Id"] != tenant["org"]["Id"]
    accounts = {a["Id"]: a for a in operator_org["client"].list_accounts()["Accounts"]}
    assert set(accounts) == {ACCOUNT_ID, late.account_id}
    assert accounts[late.account_id]["JoinedMethod"] == "CREATED"
    mine = late.client("organizations").describe_organization()["Organization"]
    assert mine["Id"] == operator_org["org"]["Id"] and mine["MasterAccountId"] == ACCOUNT_ID
    # the tenant's organization still holds the tenant alone
    assert account_ids(tenant["client"]) == {tenant["caller"].account_id}
    with pytest.raises(ClientError) as error:
        tenant["client"].describe_account(AccountId=late.account_id)
    assert code(error) == "AccountNotFoundException"
    with pytest.raises(ClientError) as error:
        early.client("organizations").describe_organization()
    assert code(error) == "AWSOrganizationsNotInUseException"


def test_the_tenants_scps_never_affect_the_operators_accounts(
    tenant: dict[str, Any], early: Caller, operator_org: dict[str, Any], late: Caller
) -> None:
    client = tenant["client"]
    for victim in (early, late):
        with pytest.raises(ClientError) as error:
            client.attach_policy(PolicyId=tenant["policy"], TargetId=victim.account_id)
        assert code(error) == "TargetNotFoundException"
        with pytest.raises(ClientError) as error:
            client.list_policies_for_target(TargetId=victim.account_id, Filter=SCP)
        assert code(error) == "TargetNotFoundException"
    targets = client.list_targets_for_policy(PolicyId=tenant["policy"])["Targets"]
    assert [t["TargetId"] for t in targets] == [tenant["root"]["Id"]]
    # the `Deny *` on the tenant's root reaches neither account's root
    for victim in (early, late):
        victim.client("kms").create_key(Description="still allowed")
        victim.client("secretsmanager").list_secrets()
    # while the operator's own SCPs do govern its member (so the checks above could have failed)
    operator = operator_org["client"]
    created = operator.create_policy(Name="no-new-keys", Description="", Type=SCP, Content=DENY_CREATE_KEY)
    policy_id = created["Policy"]["PolicySummary"]["Id"]
    operator.attach_policy(PolicyId=policy_id, TargetId=late.account_id)
    try:
        with pytest.raises(ClientError) as error:
            late.client("kms").create_key()
        assert code(error) == "AccessDeniedException"
        assert "service control policy" in error.value.response["Error"]["Message"]
    finally:
        operator.detach_policy(PolicyId=policy_id, TargetId=late.account_id)
        operator.delete_policy(PolicyId=policy_id)
    late.client("kms").create_key(Description="allowed again")


def test_an_account_in_the_tenants_organization_is_only_its_management_account(
    tenant: dict[str, Any], operator_org: dict[str, Any], late: Caller
) -> None:
    """The tenant manages its own organization (as on AWS), SCPs never touch it, and it cannot join or
    make another; a member of the operator's organization cannot make one of its own either."""
    described = tenant["client"].describe_organization()["Organization"]
    assert described["Id"] == tenant["org"]["Id"]
    tenant["caller"].client("kms").create_key(Description="a management account is never governed")
    for caller in (tenant["caller"], late):
        with pytest.raises(ClientError) as error:
            caller.client("organizations").create_organization(FeatureSet="ALL")
        assert code(error) == "AlreadyInOrganizationException"
