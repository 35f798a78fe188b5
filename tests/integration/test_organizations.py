"""AWS Organizations through boto3 against a private server: the organization's lifecycle, AWS's
errors, and service control policies as the handbook's prevention uses them — an SCP denying
kms:ScheduleKeyDeletion stops even a member account's root, never the management account, and
detaching it gives the permission back; the runbook's SCP stops every other way to destroy a key too.

One private server per module: an organization is installation-wide, so it must not meet the shared
server's other tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.cli.main import run
from tests.integration.test_kms_import import import_material
from tests.support.identity import Caller, create_account, new_user
from tests.support.server import ACCOUNT_ID, KhoaServer

SCP = "SERVICE_CONTROL_POLICY"
DENY_KEY_DELETION = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "NoKeyDeletion", "Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}
        ],
    }
)


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def org_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(Path(tmp_path_factory.mktemp("org")) / "data").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def outsider(org_server: KhoaServer) -> Caller:
    """An account made before the organization existed: not a member."""
    return create_account(org_server)


@pytest.fixture(scope="module")
def org(org_server: KhoaServer, outsider: Caller) -> dict[str, Any]:
    client = org_server.client("organizations")
    created = client.create_organization(FeatureSet="ALL")["Organization"]
    root = client.list_roots()["Roots"][0]
    client.enable_policy_type(RootId=root["Id"], PolicyType=SCP)
    return {"client": client, "org": created, "root": root}


@pytest.fixture(scope="module")
def member(org_server: KhoaServer, org: dict[str, Any]) -> Caller:
    return create_account(org_server)  # `khoa account create` joins it to the organization


def test_the_first_account_manages_the_organization(org_server: KhoaServer, org: dict[str, Any]) -> None:
    described = org["client"].describe_organization()["Organization"]
    assert described["MasterAccountId"] == ACCOUNT_ID and described["FeatureSet"] == "ALL"
    assert described["Id"] == org["org"]["Id"] and described["Id"].startswith("o-")
    assert described["Arn"] == f"arn:aws:organizations::{ACCOUNT_ID}:organization/{described['Id']}"
    assert org["root"]["Id"].startswith("r-")
    roots = org["client"].list_roots()["Roots"]
    assert roots[0]["PolicyTypes"] == [{"Type": SCP, "Status": "ENABLED"}]
    with pytest.raises(ClientError) as error:
        org["client"].create_organization(FeatureSet="ALL")
    assert code(error) == "AlreadyInOrganizationException"
    with pytest.raises(ClientError) as error:
        org["client"].enable_policy_type(RootId=org["root"]["Id"], PolicyType=SCP)
    assert code(error) == "PolicyTypeAlreadyEnabledException"


def test_new_accounts_join_with_full_aws_access(org: dict[str, Any], member: Caller) -> None:
    accounts = {a["Id"]: a for a in org["client"].list_accounts()["Accounts"]}
    assert set(accounts) >= {ACCOUNT_ID, member.account_id}
    assert accounts[member.account_id]["JoinedMethod"] == "CREATED"
    assert accounts[member.account_id]["Status"] == "ACTIVE"
    attached = org["client"].list_policies_for_target(TargetId=member.account_id, Filter=SCP)["Policies"]
    assert [p["Id"] for p in attached] == ["p-FullAWSAccess"] and attached[0]["AwsManaged"]
    targets = org["client"].list_targets_for_policy(PolicyId="p-FullAWSAccess")["Targets"]
    assert {t["TargetId"] for t in targets} >= {org["root"]["Id"], ACCOUNT_ID, member.account_id}
    # the member sees its organization but cannot manage it
    mine = member.client("organizations").describe_organization()["Organization"]
    assert mine["Id"] == org["org"]["Id"]
    with pytest.raises(ClientError) as error:
        member.client("organizations").list_accounts()
    assert code(error) == "AccessDeniedException"
    with pytest.raises(ClientError) as error:
        member.client("organizations").create_organization(FeatureSet="ALL")
    assert code(error) == "AlreadyInOrganizationException"


def test_policy_lifecycle_and_errors(org: dict[str, Any], member: Caller) -> None:
    client = org["client"]
    created = client.create_policy(
        Name="lifecycle", Description="first", Type=SCP, Content=DENY_KEY_DELETION
    )["Policy"]
    policy_id = created["PolicySummary"]["Id"]
    assert policy_id.startswith("p-") and created["Content"] == DENY_KEY_DELETION
    assert f":policy/{org['org']['Id']}/service_control_policy/{policy_id}" in created["PolicySummary"]["Arn"]
    listed = {p["Id"] for p in client.list_policies(Filter=SCP)["Policies"]}
    assert {policy_id, "p-FullAWSAccess"} <= listed
    updated = client.update_policy(PolicyId=policy_id, Description="second")["Policy"]["PolicySummary"]
    assert updated["Description"] == "second" and updated["Name"] == "lifecycle"

    def refused(expected: str, call: Any, **kwargs: Any) -> None:
        with pytest.raises(ClientError) as error:
            call(**kwargs)
        assert code(error) == expected, error.value.response

    refused(
        "DuplicatePolicyException",
        client.create_policy,
        Name="lifecycle",
        Description="",
        Type=SCP,
        Content=DENY_KEY_DELETION,
    )
    refused(
        "MalformedPolicyDocumentException",
        client.create_policy,
        Name="bad",
        Description="",
        Type=SCP,
        Content="{not json",
    )
    principal = json.dumps(
        {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]}
    )
    refused(
        "MalformedPolicyDocumentException",
        client.create_policy,
        Name="bad2",
        Description="",
        Type=SCP,
        Content=principal,
    )
    refused(
        "MalformedPolicyDocumentException",
        client.update_policy,
        PolicyId=policy_id,
        Content='{"Statement": []}',
    )
    refused("PolicyNotFoundException", client.describe_policy, PolicyId="p-00000000")
    refused("InvalidInputException", client.describe_policy, PolicyId="not-a-policy")
    refused("TargetNotFoundException", client.attach_policy, PolicyId=policy_id, TargetId="999999999999")
    refused("InvalidInputException", client.attach_policy, PolicyId=policy_id, TargetId="nonsense")
    refused(
        "PolicyNotAttachedException", client.detach_policy, PolicyId=policy_id, TargetId=member.account_id
    )
    refused(
        "ConstraintViolationException",
        client.detach_policy,
        PolicyId="p-FullAWSAccess",
        TargetId=member.account_id,
    )
    refused("AccessDeniedException", client.delete_policy, PolicyId="p-FullAWSAccess")
    client.attach_policy(PolicyId=policy_id, TargetId=member.account_id)
    refused(
        "DuplicatePolicyAttachmentException",
        client.attach_policy,
        PolicyId=policy_id,
        TargetId=member.account_id,
    )
    refused("PolicyInUseException", client.delete_policy, PolicyId=policy_id)
    client.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
    client.delete_policy(PolicyId=policy_id)
    refused("PolicyNotFoundException", client.describe_policy, PolicyId=policy_id)


def test_an_scp_stops_a_member_accounts_root_from_deleting_keys(
    org_server: KhoaServer, org: dict[str, Any], member: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    client = org["client"]
    member_kms = member.client("kms")
    management_kms = org_server.client("kms")
    member_key = member_kms.create_key()["KeyMetadata"]["KeyId"]
    management_key = management_kms.create_key()["KeyMetadata"]["KeyId"]
    policy_id = client.create_policy(
        Name="deny-key-deletion", Description="handbook prevention", Type=SCP, Content=DENY_KEY_DELETION
    )["Policy"]["PolicySummary"]["Id"]
    client.attach_policy(PolicyId=policy_id, TargetId=member.account_id)
    try:
        with pytest.raises(ClientError) as error:
            member_kms.schedule_key_deletion(KeyId=member_key, PendingWindowInDays=7)
        assert code(error) == "AccessDeniedException"
        message = error.value.response["Error"]["Message"]
        assert f"arn:aws:iam::{member.account_id}:root" in message
        assert "with an explicit deny in a service control policy" in message
        assert member_kms.describe_key(KeyId=member_key)["KeyMetadata"]["KeyState"] == "Enabled"
        # `khoa access explain` names the SCP and its statement
        capsys.readouterr()
        key_arn = member_kms.describe_key(KeyId=member_key)["KeyMetadata"]["Arn"]
        args = [
            "--principal",
            f"arn:aws:iam::{member.account_id}:root",
            "--action",
            "kms:ScheduleKeyDeletion",
        ]
        assert (
            run(
                [
                    "access",
                    "explain",
                    *args,
                    "--resource",
                    key_arn,
                    "--json",
                    "--data-dir",
                    str(org_server.data_dir),
                ]
            )
            == 0
        )
        report = json.loads(capsys.readouterr().out)
        assert report["allowed"] is False and report["decidedBy"] == "service control policy"
        assert (
            "NoKeyDeletion" in report["decidingStatement"]
            and "deny-key-deletion" in report["decidingStatement"]
        )
        assert {p["kind"] for p in report["policies"]} == {"resource-based", "service control policy"}
        # other actions of the member's root stay allowed (FullAWSAccess at every level)
        member_kms.disable_key(KeyId=member_key)
        member_kms.enable_key(KeyId=member_key)
        # an IAM user of the member account with full IAM permissions is stopped too
        admin = new_user(
            org_server, member.client("iam"), {"Effect": "Allow", "Action": "*", "Resource": "*"}
        )
        with pytest.raises(ClientError) as error:
            admin.client("kms").schedule_key_deletion(KeyId=member_key, PendingWindowInDays=7)
        assert code(error) == "AccessDeniedException"
        # the management account is never affected, even with the SCP attached to the root as well
        client.attach_policy(PolicyId=policy_id, TargetId=org["root"]["Id"])
        state = management_kms.schedule_key_deletion(KeyId=management_key, PendingWindowInDays=7)
        assert state["KeyState"] == "PendingDeletion"
        management_kms.cancel_key_deletion(KeyId=management_key)
        client.detach_policy(PolicyId=policy_id, TargetId=org["root"]["Id"])
    finally:
        client.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
    # detaching gives the permission back (the revocation epoch empties the policy cache at once)
    state = member_kms.schedule_key_deletion(KeyId=member_key, PendingWindowInDays=7)
    assert state["KeyState"] == "PendingDeletion"
    member_kms.cancel_key_deletion(KeyId=member_key)


def _runbook_scp() -> str:
    """The SCP the key-recovery runbook tells operators to attach, exactly as the runbook holds it."""
    text = (Path(__file__).resolve().parents[2] / "docs/runbooks/kms-key-recovery.md").read_text()
    start = text.index("cat > deny-kms-key-destruction.json <<'SCP'\n") + len(
        "cat > deny-kms-key-destruction.json <<'SCP'\n"
    )
    return json.dumps(json.loads(text[start : text.index("\nSCP\n", start)]))


def test_the_runbooks_scp_stops_every_way_to_destroy_a_key(
    org_server: KhoaServer, org: dict[str, Any], member: Caller
) -> None:
    """Deleting a key is not the only way to lose what it encrypted: deleting or expiring imported
    material, deleting its custom key store, or a policy that locks everyone out do it too. The runbook's
    SCP stops each of them for a member account's root, and leaves ordinary administration alone."""
    client, kms = org["client"], member.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    import_material(kms, external, material)
    policy_id = client.create_policy(
        Name="deny-kms-key-destruction", Description="runbook", Type=SCP, Content=_runbook_scp()
    )["Policy"]["PolicySummary"]["Id"]
    lockout = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}],
        }
    )
    client.attach_policy(PolicyId=policy_id, TargetId=member.account_id)
    try:
        expiring = {
            "ExpirationModel": "KEY_MATERIAL_EXPIRES",
            "ValidTo": datetime.now(UTC) + timedelta(days=1),
        }
        for call, params in (
            (kms.schedule_key_deletion, {"KeyId": key, "PendingWindowInDays": 7}),
            (kms.delete_imported_key_material, {"KeyId": external}),
            (kms.delete_custom_key_store, {"CustomKeyStoreId": "cks-1234567890abcdef0"}),
            (kms.put_key_policy, {"KeyId": key, "Policy": lockout, "BypassPolicyLockoutSafetyCheck": True}),
            (kms.create_key, {"Policy": lockout, "BypassPolicyLockoutSafetyCheck": True}),
        ):
            with pytest.raises(ClientError) as error:
                call(**params)
            assert code(error) == "AccessDeniedException", call
            assert (
                "with an explicit deny in a service control policy"
                in error.value.response["Error"]["Message"]
            )
        with pytest.raises(ClientError) as error:
            import_material(kms, external, material, **expiring)
        assert code(error) == "AccessDeniedException"
        # Ordinary administration stays allowed.
        import_material(kms, external, material)
        kms.disable_key(KeyId=key)
        kms.enable_key(KeyId=key)
        kms.put_key_policy(KeyId=key, Policy=kms.get_key_policy(KeyId=key)["Policy"])
        assert kms.describe_key(KeyId=external)["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        client.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
        client.delete_policy(PolicyId=policy_id)


def test_scps_never_grant(org_server: KhoaServer, org: dict[str, Any], member: Caller) -> None:
    """FullAWSAccess allows everything, yet an IAM user without policies is still refused; and a level
    with only a narrow Allow implicitly denies the rest."""
    nobody = new_user(org_server, member.client("iam"))
    with pytest.raises(ClientError) as error:
        nobody.client("kms").list_keys()
    assert "because no identity-based policy allows" in error.value.response["Error"]["Message"]
    # a KMS grant lets the user encrypt, until an SCP no longer allows KMS
    key = member.client("kms").create_key()["KeyMetadata"]["KeyId"]
    member.client("kms").create_grant(KeyId=key, GranteePrincipal=nobody.arn, Operations=["Encrypt"])
    nobody.client("kms").encrypt(KeyId=key, Plaintext=b"by grant")
    client = org["client"]
    only_secrets = json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}
    )
    policy_id = client.create_policy(Name="only-secrets", Description="", Type=SCP, Content=only_secrets)[
        "Policy"
    ]["PolicySummary"]["Id"]
    client.attach_policy(PolicyId=policy_id, TargetId=member.account_id)
    client.detach_policy(PolicyId="p-FullAWSAccess", TargetId=member.account_id)
    try:
        with pytest.raises(ClientError) as error:
            member.client("kms").list_keys()
        assert (
            "because no service control policy allows the kms:ListKeys action"
            in error.value.response["Error"]["Message"]
        )
        with pytest.raises(ClientError) as error:  # grants never reach past an SCP
            nobody.client("kms").encrypt(KeyId=key, Plaintext=b"by grant")
        assert (
            "no service control policy allows the kms:Encrypt action"
            in error.value.response["Error"]["Message"]
        )
        member.client("secretsmanager").list_secrets()
    finally:
        client.attach_policy(PolicyId="p-FullAWSAccess", TargetId=member.account_id)
        client.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
    member.client("kms").list_keys()


def test_organization_condition_keys(
    org_server: KhoaServer, org: dict[str, Any], member: Caller, outsider: Caller
) -> None:
    """aws:PrincipalOrgID/Paths and aws:ResourceOrgID/Paths are in the request context of accounts in
    the organization: the documented way to share a secret with the organization (Principal "*" and
    aws:PrincipalOrgID) lets a member read it and nobody outside, and a Deny on the organization's
    path stops its own users."""
    org_id, root_id = org["org"]["Id"], org["root"]["Id"]
    in_org = {"StringEquals": {"aws:PrincipalOrgID": org_id}}
    kms, sm = org_server.client("kms"), org_server.client("secretsmanager")
    root = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}}
    key = kms.create_key(
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {**root, "Action": "kms:*", "Resource": "*"},
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "kms:Decrypt",
                        "Resource": "*",
                        "Condition": in_org,
                    },
                ],
            }
        )
    )["KeyMetadata"]["Arn"]
    shared = sm.create_secret(Name="org-shared", SecretString="for the org", KmsKeyId=key)["ARN"]
    sm.put_resource_policy(
        SecretId=shared,
        BlockPublicPolicy=True,  # bounded by the organization: not public
        ResourcePolicy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": "*",
                        "Condition": in_org,
                    }
                ],
            }
        ),
    )
    reader = {
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "kms:Decrypt"],
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceOrgID": org_id}},
    }
    anywhere = {k: v for k, v in reader.items() if k != "Condition"}
    assert (
        new_user(org_server, member.client("iam"), reader)
        .client("secretsmanager")
        .get_secret_value(SecretId=shared)["SecretString"]
        == "for the org"
    )
    stranger = new_user(org_server, outsider.client("iam"), anywhere)
    with pytest.raises(ClientError) as error:
        stranger.client("secretsmanager").get_secret_value(SecretId=shared)
    assert code(error) == "AccessDeniedException"

    fenced = sm.create_secret(Name="not-for-the-org", SecretString="x")["ARN"]
    sm.put_resource_policy(
        SecretId=fenced,
        ResourcePolicy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": "*",
                        "Condition": {
                            "ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": f"{org_id}/{root_id}/*"}
                        },
                    }
                ],
            }
        ),
    )
    local = new_user(org_server, org_server.client("iam"), anywhere)
    with pytest.raises(ClientError) as error:
        local.client("secretsmanager").get_secret_value(SecretId=fenced)
    assert code(error) == "AccessDeniedException"


def test_accounts_outside_an_organization(org: dict[str, Any], outsider: Caller) -> None:
    accounts = {a["Id"] for a in org["client"].list_accounts()["Accounts"]}
    assert outsider.account_id not in accounts
    with pytest.raises(ClientError) as error:
        outsider.client("organizations").describe_organization()
    assert code(error) == "AWSOrganizationsNotInUseException"
    with pytest.raises(ClientError) as error:
        outsider.client("organizations").list_policies(Filter=SCP)
    assert code(error) == "AWSOrganizationsNotInUseException"
    # bad input: Organizations' own InvalidInputException, not a ValidationException
    with pytest.raises(ClientError) as error:
        unvalidated = outsider.client("organizations", validate=False)
        unvalidated.list_policies(Filter="NOT_A_TYPE")
    assert code(error) == "InvalidInputException"
