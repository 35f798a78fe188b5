"""IAM Access Analyzer over the wire (boto3's ``accessanalyzer`` client, restJson1, and the aws CLI):
analyzers, external-access findings for secrets and keys that follow their policies and grants,
archiving, ValidatePolicy over a table of policies, authorisation and AWS-shaped refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.awscli import AwsCli, aws_env
from tests.support.identity import create_account, new_user
from tests.support.server import ACCOUNT_ID, KhoaServer, fresh_region

OTHER = "444455556666"


def _doc(*statements: dict[str, Any], version: bool = True) -> str:
    document: dict[str, Any] = {"Statement": list(statements)}
    if version:
        document = {"Version": "2012-10-17", **document}
    return json.dumps(document)


def _code(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


class World:
    def __init__(self, server: KhoaServer) -> None:
        self.region = fresh_region()
        self.aa = server.client("accessanalyzer", self.region)
        self.kms = server.client("kms", self.region)
        self.sm = server.client("secretsmanager", self.region)
        self.name = f"analyzer-{uuid.uuid4().hex[:8]}"
        self.arn = self.aa.create_analyzer(analyzerName=self.name, type="ACCOUNT")["arn"]

    def findings(self, resource: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self.aa.list_findings(analyzerArn=self.arn, maxResults=2, **token)
            found += [f for f in page["findings"] if f["resource"] == resource]
            if "nextToken" not in page:
                return found
            token = {"nextToken": page["nextToken"]}


@pytest.fixture(scope="module")
def world(server: KhoaServer) -> Iterator[World]:
    yield World(server)


def test_analyzer_lifecycle(server: KhoaServer) -> None:
    aa = server.client("accessanalyzer", fresh_region())
    arn = aa.create_analyzer(analyzerName="team.analyzer_1", type="ACCOUNT", tags={"team": "sec"})["arn"]
    assert arn.startswith("arn:aws:access-analyzer:") and arn.endswith(":analyzer/team.analyzer_1")
    got = aa.get_analyzer(analyzerName="team.analyzer_1")["analyzer"]
    assert (got["arn"], got["type"], got["status"], got["tags"]) == (
        arn,
        "ACCOUNT",
        "ACTIVE",
        {"team": "sec"},
    )
    assert [a["arn"] for a in aa.list_analyzers()["analyzers"]] == [arn]
    assert aa.list_analyzers(type="ORGANIZATION")["analyzers"] == []
    with pytest.raises(ClientError) as conflict:
        aa.create_analyzer(analyzerName="team.analyzer_1", type="ACCOUNT")
    assert _code(conflict.value) == ("ConflictException", 409)
    with pytest.raises(ClientError) as second:
        aa.create_analyzer(analyzerName="another", type="ACCOUNT")
    assert _code(second.value)[0] == "ServiceQuotaExceededException"
    with pytest.raises(ClientError) as no_org:
        aa.create_analyzer(analyzerName="org", type="ORGANIZATION")
    assert _code(no_org.value) == ("ValidationException", 400)
    assert "organization" in no_org.value.response["Error"]["Message"]
    aa.delete_analyzer(analyzerName="team.analyzer_1")
    with pytest.raises(ClientError) as gone:
        aa.get_analyzer(analyzerName="team.analyzer_1")
    assert _code(gone.value) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as gone_again:
        aa.delete_analyzer(analyzerName="team.analyzer_1")
    assert _code(gone_again.value) == ("ResourceNotFoundException", 404)


def test_secret_shared_with_another_account_and_everyone(world: World) -> None:
    secret = world.sm.create_secret(Name=f"shared/{uuid.uuid4().hex[:8]}", SecretString="s3cret")["ARN"]
    assert world.findings(secret) == []
    cross = {
        "Sid": "Partner",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
    }
    own = {**cross, "Sid": "Own", "Principal": {"AWS": ACCOUNT_ID}, "Action": "secretsmanager:*"}
    world.sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(cross, own))
    [finding] = world.findings(secret)
    assert finding["principal"] == {"AWS": f"arn:aws:iam::{OTHER}:root"}
    assert finding["action"] == ["secretsmanager:GetSecretValue"]
    assert (finding["status"], finding["isPublic"], finding["resourceType"]) == (
        "ACTIVE",
        False,
        "AWS::SecretsManager::Secret",
    )
    assert finding["resourceOwnerAccount"] == ACCOUNT_ID

    anyone = {**cross, "Sid": "Anyone", "Principal": "*", "Action": "secretsmanager:DescribeSecret"}
    world.sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(cross, anyone), BlockPublicPolicy=False)
    found = {json.dumps(f["principal"]): f for f in world.findings(secret)}
    assert found['{"AWS": "*"}']["isPublic"] is True
    assert found['{"AWS": "*"}']["action"] == ["secretsmanager:DescribeSecret"]
    assert found[json.dumps(cross["Principal"])]["id"] == finding["id"]  # the same access, the same finding

    # "*" pinned to the account by a condition is not external access
    pinned = {**anyone, "Condition": {"StringEquals": {"aws:PrincipalAccount": ACCOUNT_ID}}}
    world.sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(cross, pinned), BlockPublicPolicy=False)
    statuses = {json.dumps(f["principal"]): f["status"] for f in world.findings(secret)}
    assert statuses == {'{"AWS": "*"}': "RESOLVED", json.dumps(cross["Principal"]): "ACTIVE"}

    # "*" pinned to another account is that account's access, not the public's
    elsewhere = {**anyone, "Sid": "Elsewhere", "Condition": {"StringEquals": {"aws:PrincipalAccount": OTHER}}}
    world.sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(elsewhere), BlockPublicPolicy=False)
    [active] = [f for f in world.findings(secret) if f["status"] == "ACTIVE"]
    assert (active["principal"], active["isPublic"]) == ({"AWS": "*"}, False)
    assert active["condition"] == {"aws:PrincipalAccount": OTHER}

    world.sm.delete_resource_policy(SecretId=secret)
    assert {f["status"] for f in world.findings(secret)} == {"RESOLVED"}
    got = world.aa.get_finding(analyzerArn=world.arn, id=finding["id"])["finding"]
    assert got["status"] == "RESOLVED"


def test_key_policy_and_grant_to_another_account(world: World) -> None:
    root = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    partner = {
        "Effect": "Allow",
        "Principal": {"AWS": OTHER},
        "Action": ["kms:Decrypt", "kms:Describe*"],
        "Resource": "*",
    }
    key = world.kms.create_key(Policy=_doc(root, partner))["KeyMetadata"]
    grantee = f"arn:aws:iam::{OTHER}:role/reader"
    grant = world.kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=grantee,
        Operations=["Encrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextEquals": {"app": "billing"}},
    )
    findings = {json.dumps(f["principal"]): f for f in world.findings(key["Arn"])}
    assert set(findings) == {json.dumps({"AWS": OTHER}), json.dumps({"AWS": grantee})}
    via_policy = findings[json.dumps({"AWS": OTHER})]
    assert via_policy["action"] == ["kms:Decrypt", "kms:DescribeCustomKeyStores", "kms:DescribeKey"]
    assert via_policy["sources"] == [{"type": "POLICY"}]
    via_grant = findings[json.dumps({"AWS": grantee})]
    assert sorted(via_grant["action"]) == ["kms:Encrypt", "kms:GenerateDataKey"]
    assert via_grant["condition"] == {"kms:EncryptionContext:app": "billing"}

    v2 = world.aa.get_finding_v2(analyzerArn=world.arn, id=via_grant["id"])
    assert v2["findingType"] == "ExternalAccess"
    assert v2["findingDetails"][0]["externalAccessDetails"]["principal"] == {"AWS": grantee}
    listed = world.aa.list_findings_v2(
        analyzerArn=world.arn, filter={"resource": {"eq": [key["Arn"]]}, "status": {"eq": ["ACTIVE"]}}
    )["findings"]
    assert {f["id"] for f in listed} == {via_policy["id"], via_grant["id"]}

    world.kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    world.kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=_doc(root))
    assert {f["status"] for f in world.findings(key["Arn"])} == {"RESOLVED"}


def test_archive_and_activate(world: World) -> None:
    secret = world.sm.create_secret(Name=f"archive/{uuid.uuid4().hex[:8]}", SecretString="v")["ARN"]
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": OTHER},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
    }
    world.sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(statement))
    [finding] = world.findings(secret)
    world.aa.update_findings(analyzerArn=world.arn, ids=[finding["id"]], status="ARCHIVED")
    assert [f["status"] for f in world.findings(secret)] == ["ARCHIVED"]
    archived = world.aa.list_findings(analyzerArn=world.arn, filter={"status": {"eq": ["ARCHIVED"]}})
    assert finding["id"] in {f["id"] for f in archived["findings"]}
    world.aa.update_findings(analyzerArn=world.arn, resourceArn=secret, status="ACTIVE")
    assert [f["status"] for f in world.findings(secret)] == ["ACTIVE"]
    with pytest.raises(ClientError) as unknown:
        world.aa.update_findings(analyzerArn=world.arn, ids=[str(uuid.uuid4())], status="ARCHIVED")
    assert _code(unknown.value) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as bad_status:
        world.aa.update_findings(analyzerArn=world.arn, ids=[finding["id"]], status="RESOLVED")
    assert _code(bad_status.value) == ("ValidationException", 400)


def test_organization_analyzer_needs_the_management_account(server: KhoaServer) -> None:
    aa = server.client("accessanalyzer", fresh_region())
    with pytest.raises(ClientError) as refused:
        aa.create_analyzer(analyzerName="whole-org", type="ORGANIZATION")
    assert _code(refused.value) == ("ValidationException", 400)


ALLOW_ALL_KMS = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT_ID}:secret:db-AbCdEf"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# (policy type, document, expected (findingType, issueCode) pairs, in order)
POLICIES: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRET}),
        [],
    ),
    ("IDENTITY_POLICY", '{"Version": "2012-10-17", "Statement": [', [("ERROR", "JSON_SYNTAX_ERROR")]),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "secretsmanager:GetSecretValu", "Resource": SECRET}),
        [("ERROR", "INVALID_ACTION")],
    ),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Permit", "Action": "kms:Decrypt", "Resource": KEY}),
        [("ERROR", "INVALID_EFFECT")],
    ),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY, "Principal": "*"}),
        [("ERROR", "UNSUPPORTED_PRINCIPAL")],
    ),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY, "Extra": 1}),
        [("ERROR", "INVALID_POLICY_ELEMENT")],
    ),
    (
        "IDENTITY_POLICY",
        _doc(
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": KEY,
                "Condition": {"StringEquals": {"kms:NoSuchKey": "x", "aws:NoSuchKey": "y"}},
            }
        ),
        [("ERROR", "INVALID_SERVICE_CONDITION_KEY"), ("ERROR", "INVALID_GLOBAL_CONDITION_KEY")],
    ),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": SECRET}),
        [("ERROR", "UNSUPPORTED_RESOURCE_ARN_IN_POLICY")],
    ),
    ("IDENTITY_POLICY", _doc(ALLOW_ALL_KMS), [("SECURITY_WARNING", "WILDCARD_ACTION")]),
    (
        "IDENTITY_POLICY",
        _doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY}, version=False),
        [("WARNING", "MISSING_VERSION")],
    ),
    (
        "IDENTITY_POLICY",
        _doc(
            {
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:Decrypt", "kms:Describe*", "kms:DescribeKey"],
                "Resource": KEY,
            }
        ),
        [("SUGGESTION", "REDUNDANT_ACTION"), ("SUGGESTION", "REDUNDANT_ACTION")],
    ),
    (
        "IDENTITY_POLICY",
        _doc(
            {"Sid": "A", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY},
            {"Sid": "B", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY},
        ),
        [("SUGGESTION", "REDUNDANT_STATEMENT")],
    ),
    (
        "RESOURCE_POLICY",
        _doc({"Effect": "Allow", "NotPrincipal": {"AWS": OTHER}, "Action": "kms:Decrypt", "Resource": "*"}),
        [("SECURITY_WARNING", "ALLOW_WITH_NOT_PRINCIPAL")],
    ),
    (
        "RESOURCE_POLICY",
        _doc(
            {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
        ),
        [("SECURITY_WARNING", "PUBLIC_ACCESS")],
    ),
    (
        "RESOURCE_POLICY",
        _doc(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
            }
        ),
        [],
    ),
    (
        "RESOURCE_POLICY",
        _doc({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
        [("ERROR", "MISSING_PRINCIPAL")],
    ),
    (
        "RESOURCE_POLICY",
        _doc({"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID}, "Action": "*", "Resource": "*"}),
        [("SECURITY_WARNING", "WILDCARD_ACTION")],
    ),
]


@pytest.mark.parametrize(("policy_type", "document", "expected"), POLICIES)
def test_validate_policy(
    world: World, policy_type: str, document: str, expected: list[tuple[str, str]]
) -> None:
    findings = world.aa.validate_policy(policyType=policy_type, policyDocument=document)["findings"]
    assert [(f["findingType"], f["issueCode"]) for f in findings] == expected
    for finding in findings:
        assert finding["findingDetails"] and finding["learnMoreLink"].startswith(
            "https://docs.aws.amazon.com/"
        )
        for location in finding["locations"]:
            start, end = location["span"]["start"], location["span"]["end"]
            assert 0 <= start["offset"] <= end["offset"] <= len(document)


def test_validate_policy_locations_point_at_the_problem(world: World) -> None:
    document = _doc({"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Nope"], "Resource": KEY})
    [finding] = world.aa.validate_policy(policyType="IDENTITY_POLICY", policyDocument=document)["findings"]
    [location] = finding["locations"]
    assert location["path"] == [{"value": "Statement"}, {"index": 0}, {"value": "Action"}, {"index": 1}]
    span = location["span"]
    assert document[span["start"]["offset"] : span["end"]["offset"]] == '"kms:Nope"'
    assert span["start"]["line"] == 1 and span["start"]["column"] == span["start"]["offset"]


def test_validate_policy_pages(world: World) -> None:
    statements = [{"Effect": "Allow", "Action": f"kms:Nope{i}", "Resource": KEY} for i in range(5)]
    document = _doc(*statements)
    first = world.aa.validate_policy(policyType="IDENTITY_POLICY", policyDocument=document, maxResults=3)
    rest = world.aa.validate_policy(
        policyType="IDENTITY_POLICY", policyDocument=document, nextToken=first["nextToken"]
    )
    assert len(first["findings"]) == 3 and len(rest["findings"]) == 2 and "nextToken" not in rest
    with pytest.raises(ClientError) as bad_token:
        world.aa.validate_policy(policyType="IDENTITY_POLICY", policyDocument=document, nextToken="nope")
    assert _code(bad_token.value) == ("ValidationException", 400)


def test_bad_input_is_refused_as_aws_does(server: KhoaServer, world: World) -> None:
    raw = server.client("accessanalyzer", world.region, validate=False)
    with pytest.raises(ClientError) as bad_name:
        raw.create_analyzer(analyzerName="9 bad name", type="ACCOUNT")
    assert _code(bad_name.value) == ("ValidationException", 400)
    assert "analyzerName" in bad_name.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as bad_type:
        raw.validate_policy(policyType="NOT_A_TYPE", policyDocument="{}")
    assert _code(bad_type.value) == ("ValidationException", 400)
    with pytest.raises(ClientError) as missing:
        raw.list_findings(analyzerArn=f"arn:aws:access-analyzer:{world.region}:{ACCOUNT_ID}:analyzer/none")
    assert _code(missing.value) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as bad_max:
        raw.list_analyzers(maxResults=0)
    assert _code(bad_max.value) == ("ValidationException", 400)


def test_authorization_through_iam_policies(server: KhoaServer, world: World) -> None:
    iam = server.client("iam")
    nobody = new_user(server, iam)
    with pytest.raises(ClientError) as denied:
        nobody.client("accessanalyzer").validate_policy(
            policyType="IDENTITY_POLICY", policyDocument=_doc(ALLOW_ALL_KMS)
        )
    assert _code(denied.value) == ("AccessDeniedException", 403)
    assert "access-analyzer:ValidatePolicy" in denied.value.response["Error"]["Message"]

    reader = new_user(
        server,
        iam,
        {
            "Effect": "Allow",
            "Action": ["access-analyzer:ValidatePolicy", "access-analyzer:List*"],
            "Resource": "*",
        },
        {"Effect": "Deny", "Action": "access-analyzer:ListFindings", "Resource": world.arn},
    )
    client = server.client(
        "accessanalyzer",
        world.region,
        aws_access_key_id=reader.access_key_id,
        aws_secret_access_key=reader.secret_access_key,
    )
    assert client.validate_policy(policyType="IDENTITY_POLICY", policyDocument=_doc(ALLOW_ALL_KMS))[
        "findings"
    ]
    assert world.arn in {a["arn"] for a in client.list_analyzers()["analyzers"]}
    with pytest.raises(ClientError) as not_findings:
        client.list_findings(analyzerArn=world.arn)
    assert _code(not_findings.value) == ("AccessDeniedException", 403)
    with pytest.raises(ClientError) as not_create:
        client.create_analyzer(analyzerName="mine", type="ACCOUNT")
    assert _code(not_create.value) == ("AccessDeniedException", 403)


def test_aws_cli_validates_a_policy(server: KhoaServer) -> None:
    cli = AwsCli(server.endpoint, aws_env(), "accessanalyzer")
    result = cli.run(
        "validate-policy",
        "--policy-type",
        "RESOURCE_POLICY",
        "--policy-document",
        _doc({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
        "--output",
        "json",
    )
    findings = json.loads(result.stdout)["findings"]
    assert [(f["findingType"], f["issueCode"]) for f in findings] == [("SECURITY_WARNING", "PUBLIC_ACCESS")]


def test_organization_zone_of_trust(fresh_server: KhoaServer) -> None:
    """An ORGANIZATION analyzer (its own server: an organization is installation-wide) trusts every
    account of the organization and reports what its members share outside it."""
    server = fresh_server.start()
    server.client("organizations").create_organization(FeatureSet="ALL")
    member = create_account(server)
    aa, sm = server.client("accessanalyzer"), server.client("secretsmanager")
    org_arn = aa.create_analyzer(analyzerName="org", type="ORGANIZATION")["arn"]
    account_arn = aa.create_analyzer(analyzerName="account", type="ACCOUNT")["arn"]
    with pytest.raises(ClientError) as not_management:
        member.client("accessanalyzer").create_analyzer(analyzerName="mine", type="ORGANIZATION")
    assert _code(not_management.value) == ("ValidationException", 400)

    to_member = {
        "Effect": "Allow",
        "Principal": {"AWS": member.account_id},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
    }
    secret = sm.create_secret(Name="org/shared", SecretString="v")["ARN"]
    sm.put_resource_policy(SecretId=secret, ResourcePolicy=_doc(to_member))
    outside = {**to_member, "Principal": {"AWS": OTHER}}
    member_sm = member.client("secretsmanager")
    member_secret = member_sm.create_secret(Name="member/shared", SecretString="v")["ARN"]
    member_sm.put_resource_policy(SecretId=member_secret, ResourcePolicy=_doc(outside))

    def principals(analyzer: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for finding in aa.list_findings(analyzerArn=analyzer)["findings"]:
            found.setdefault(finding["resource"], set()).update(finding["principal"].values())
        return found

    assert principals(org_arn) == {member_secret: {OTHER}}  # the member is inside the zone of trust
    assert principals(account_arn) == {secret: {member.account_id}}  # another account is outside
    [finding] = aa.list_findings(analyzerArn=org_arn)["findings"]
    assert finding["resourceOwnerAccount"] == member.account_id
