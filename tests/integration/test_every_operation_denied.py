"""Every operation of every service, called by a principal with no policies (an IAM user, and a session
of a role), is refused with AccessDenied.

The operations are not listed here: they are every handler of every service Khoa builds
(``build_service().handlers``), so an operation added tomorrow is called here tomorrow (and a service
whose authorisation table does not cover its handlers cannot even be built). Each call is made over the
wire, signed with the user's key, with parameters generated from botocore's model of the operation:
every required member filled, and every member that names a resource pointing at one the account root
created first (a key, alias, grant and ciphertext; a secret; a parameter; a user, group, role, managed
policy and access key), so the request is valid and reaches the authorisation step for a resource that
exists. The answer must be AWS's refusal: ``AccessDenied`` with HTTP 403 for the query services (IAM,
STS), ``AccessDeniedException`` with HTTP 400 for the JSON ones (403 for Access Analyzer, whose model
says so).

Documented exceptions are listed in ``NO_PERMISSION_NEEDED`` below, and must equal the exemptions the
authorisation tables declare.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.model import OperationModel, Shape

from tests.support.identity import Caller, new_user, session
from tests.support.server import ACCOUNT_ID, KhoaServer
from tests.support.services import every_service

QUERY_SERVICES = ("iam", "sts")

# Operations AWS documents as needing no permission, so a caller without policies may call them.
NO_PERMISSION_NEEDED = {
    # "No permissions are required to perform this operation. If an administrator attaches a policy to
    # your identity that explicitly denies access to the sts:GetCallerIdentity action, you can still
    # perform this operation." (AWS STS API reference, GetCallerIdentity)
    ("sts", "GetCallerIdentity"),
}

# Operations in other engineers' areas that do not answer AccessDenied yet: (service, operation) ->
# why. Each one is an xfail (strict: it fails once fixed, so the entry gets removed). Empty is the goal.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


# Building a service checks that its authorisation table covers exactly its handlers.
BUILT = every_service()
OPERATIONS = sorted((name, op) for name, service in BUILT.items() for op in service.handlers)


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass
class World:
    """Resources the account root made, and a user with no policies at all."""

    denied: Caller  # an IAM user with no policies
    session: Caller  # a session of a role with no policies
    values: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)


def snapshot(server: KhoaServer, values: dict[str, Any]) -> dict[str, Any]:
    """What the account root sees of the account's resources (without access times)."""
    root_iam, root_kms = server.client("iam"), server.client("kms")
    root_sm, root_ssm = server.client("secretsmanager"), server.client("ssm")
    key_id = values["KeyId"]
    secret = root_sm.describe_secret(SecretId=values["SecretId"])
    parameter = root_ssm.get_parameter(Name=values["Name"])["Parameter"]
    return {
        "iam": {
            k: v for k, v in root_iam.get_account_authorization_details().items() if k != "ResponseMetadata"
        },
        "access keys": root_iam.list_access_keys(UserName=values["UserName"])["AccessKeyMetadata"],
        "key": root_kms.describe_key(KeyId=key_id)["KeyMetadata"],
        "key policy": root_kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"],
        "aliases": root_kms.list_aliases(KeyId=key_id)["Aliases"],
        "grants": root_kms.list_grants(KeyId=key_id)["Grants"],
        "secrets": [s["ARN"] for s in root_sm.list_secrets()["SecretList"]],
        "secret": {k: v for k, v in secret.items() if k not in ("LastAccessedDate", "ResponseMetadata")},
        "secret value": root_sm.get_secret_value(SecretId=values["SecretId"])["SecretString"],
        "parameter": (parameter["Value"], parameter["Version"]),
        "parameter tags": root_ssm.list_tags_for_resource(
            ResourceType="Parameter", ResourceId=values["Name"]
        )["TagList"],
    }


@pytest.fixture(scope="module")
def world(server: KhoaServer) -> Iterator[World]:
    root_iam = server.client("iam")
    root_kms = server.client("kms")
    root_sm = server.client("secretsmanager")
    root_ssm = server.client("ssm")
    tag = uuid.uuid4().hex[:8]
    denied = new_user(server, root_iam, name=f"nobody-{tag}")  # no policies, no groups, no boundary

    user = root_iam.create_user(UserName=f"target-{tag}", Path="/team/")["User"]
    target_key = root_iam.create_access_key(UserName=user["UserName"])["AccessKey"]["AccessKeyId"]
    group = root_iam.create_group(GroupName=f"group-{tag}")["Group"]
    root_iam.add_user_to_group(GroupName=group["GroupName"], UserName=user["UserName"])
    trust = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
            "Action": "sts:AssumeRole",
        }
    )
    role = root_iam.create_role(RoleName=f"role-{tag}", AssumeRolePolicyDocument=trust)["Role"]
    identity = _policy({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"})
    managed = root_iam.create_policy(PolicyName=f"managed-{tag}", PolicyDocument=identity)["Policy"]
    root_iam.put_user_policy(UserName=user["UserName"], PolicyName="inline", PolicyDocument=identity)

    key_id = root_kms.create_key(Description="every-operation")["KeyMetadata"]["KeyId"]
    alias = f"alias/every-{tag}"
    root_kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    grant = root_kms.create_grant(KeyId=key_id, GranteePrincipal=role["Arn"], Operations=["Decrypt"])
    ciphertext = root_kms.encrypt(KeyId=key_id, Plaintext=b"secret")["CiphertextBlob"]

    secret = root_sm.create_secret(Name=f"every/{tag}", SecretString="s3cret")
    parameter = f"/every/{tag}"
    root_ssm.put_parameter(Name=parameter, Value="v", Type="String")

    values: dict[str, Any] = {
        # KMS
        "KeyId": key_id,
        "TargetKeyId": key_id,
        "SourceKeyId": key_id,
        "DestinationKeyId": key_id,
        "AliasName": alias,
        "GrantId": grant["GrantId"],
        "GrantToken": grant["GrantToken"],
        "GrantTokens": [grant["GrantToken"]],
        "CiphertextBlob": ciphertext,
        "GranteePrincipal": denied.arn,
        "RetiringPrincipal": denied.arn,
        "Policy": _policy(
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID}, "Action": "kms:*", "Resource": "*"}
        ),
        "PolicyName": "default",
        # Secrets Manager
        "SecretId": secret["ARN"],
        "SecretIdList": [secret["ARN"]],
        "ResourcePolicy": _policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": ACCOUNT_ID},
                "Action": "secretsmanager:*",
                "Resource": "*",
            }
        ),
        # SSM
        "Name": parameter,
        "Names": [parameter],
        "ResourceId": parameter,
        "ResourceType": "Parameter",
        "Path": "/",
        # IAM
        "UserName": user["UserName"],
        "GroupName": group["GroupName"],
        "RoleName": role["RoleName"],
        "PolicyArn": managed["Arn"],
        "PermissionsBoundary": managed["Arn"],
        "PolicyDocument": identity,
        "AssumeRolePolicyDocument": trust,
        "PolicySourceArn": user["Arn"],
        "PolicyInputList": [identity],
        "ActionNames": ["ssm:GetParameter"],
        "VersionId": "v1",
        "AccessKeyId": target_key,
        "PathPrefix": "/",
        "NewPath": "/",
        # STS
        "RoleArn": role["Arn"],
        "RoleSessionName": "every",
        # Regions must look like regions
        "ReplicaRegion": "us-west-2",
        "PrimaryRegion": "us-west-2",
        "Region": "us-west-2",
        "RemoveReplicaRegions": ["us-west-2"],
    }
    # A role with no policies, and a session of it (assumed by a user allowed only to assume it).
    empty = root_iam.create_role(RoleName=f"empty-{tag}", AssumeRolePolicyDocument=trust)["Role"]
    assumer = new_user(
        server, root_iam, {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": empty["Arn"]}
    )
    role_session = session(assumer, empty["Arn"], "empty")
    yield World(denied, role_session, values, snapshot(server, values))


# Members whose model value depends on the operation.
_PER_OPERATION: dict[tuple[str, str], dict[str, Any]] = {
    # New names: authorisation comes before the existence check either way, but use fresh ones.
    ("kms", "CreateAlias"): {"AliasName": "alias/every-new"},
    ("secretsmanager", "CreateSecret"): {"Name": "every/new"},
    ("ssm", "PutParameter"): {"Value": "v", "Type": "String"},
    # The policy-name members of KMS and IAM differ from Secrets Manager's ``Name``.
    ("iam", "CreatePolicy"): {"PolicyName": "every-new", "Path": "/"},
    ("iam", "CreateUser"): {"Path": "/"},
    ("iam", "CreateGroup"): {"Path": "/"},
    ("iam", "CreateRole"): {"Path": "/"},
    ("iam", "UpdateAccessKey"): {"Status": "Inactive"},
}
# Members whose model value depends on the service.
_PER_SERVICE: dict[str, dict[str, Any]] = {
    "secretsmanager": {"VersionId": str(uuid.uuid4())},
    # Access Analyzer's analyzer ARNs must match its pattern (the analyzer need not exist).
    "accessanalyzer": {"analyzerArn": f"arn:aws:access-analyzer:us-east-1:{ACCOUNT_ID}:analyzer/every"},
    # Organizations' ids must match its patterns to reach authorisation (which comes before the
    # handler looks for the organization, so they need not exist).
    "organizations": {
        "PolicyId": "p-00000000",
        "TargetId": "r-0000",
        "RootId": "r-0000",
        "AccountId": ACCOUNT_ID,
        "Name": "every-new",
        "Content": _policy({"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}),
    },
}


def _value(shape: Shape, name: str, known: dict[str, Any], depth: int = 0) -> Any:
    """A value valid for ``shape`` (botocore's model): a known resource when ``name`` names one."""
    if name in known:
        return known[name]
    kind = shape.type_name
    if kind == "structure":
        # Required members; a structure that requires none (a Secrets Manager Tag, say) gets them all.
        members = shape.required_members or list(shape.members)
        return {member: _value(shape.members[member], member, known, depth + 1) for member in members}
    if kind == "list":
        count = max(1, shape.metadata.get("min", 1))
        return [_value(shape.member, name, known, depth + 1) for _ in range(count)]
    if kind == "map":
        return {"k": _value(shape.value, "v", known, depth + 1)}
    if kind == "string":
        if shape.enum:
            return shape.enum[0]
        return "x" * max(1, shape.metadata.get("min", 1))
    if kind in ("integer", "long"):
        return max(1, int(shape.metadata.get("min", 1)))
    if kind in ("float", "double"):
        return float(max(1, shape.metadata.get("min", 1)))
    if kind == "boolean":
        return False
    if kind == "blob":
        return b"x" * max(1, shape.metadata.get("min", 1))
    if kind == "timestamp":
        return datetime.now(UTC)
    raise AssertionError(f"no generator for {kind} ({name})")


def request_for(model: OperationModel, known: dict[str, Any]) -> dict[str, Any]:
    """Every required member, plus every member that names a known resource (KeyId on Decrypt, say)."""
    shape = model.input_shape
    if shape is None:
        return {}
    params = {}
    for member, member_shape in shape.members.items():
        if member in shape.required_members or member in known:
            params[member] = _value(member_shape, member, known)
    return params


_models = botocore.session.get_session()


@pytest.mark.parametrize("who", ["user", "session"])
@pytest.mark.parametrize(("service", "operation"), OPERATIONS, ids=[f"{s}.{o}" for s, o in OPERATIONS])
def test_a_caller_without_policies_is_denied(world: World, service: str, operation: str, who: str) -> None:
    if (service, operation) in KNOWN_GAPS:
        pytest.xfail(KNOWN_GAPS[(service, operation)])
    model = _models.get_service_model(service).operation_model(operation)
    known = {
        **world.values,
        **_PER_SERVICE.get(service, {}),
        **_PER_OPERATION.get((service, operation), {}),
    }
    params = request_for(model, known)
    caller = world.denied if who == "user" else world.session
    call = getattr(caller.client(service, validate=False), xform_name(operation))
    if (service, operation) in NO_PERMISSION_NEEDED:
        call(**params)  # succeeds without any policy
        return
    with pytest.raises(ClientError) as excinfo:
        call(**params)
    error = excinfo.value.response["Error"]
    status = excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]
    # AccessDeniedException is 400 where the model has no such shape (KMS...), its own status elsewhere
    # (403 for Access Analyzer).
    json_status = BUILT[service].model.error_status("AccessDeniedException")
    expected = ("AccessDenied", 403) if service in QUERY_SERVICES else ("AccessDeniedException", json_status)
    assert (error["Code"], status) == expected, f"{service}.{operation}({params}) answered {error}"
    # Refused by the authorisation step, for one of the actions the operation's rule names.
    rule = BUILT[service].authorizer.rules[operation]
    message = error.get("Message", "")
    assert any(
        message.startswith(f"User: {caller.arn} is not authorized to perform: {action} on resource: ")
        for action in rule.actions
    ), message


def test_the_refused_calls_changed_nothing(server: KhoaServer, world: World) -> None:
    """Runs after the calls above: every one was refused before its handler ran, so nothing changed."""
    after = snapshot(server, world.values)
    for part, seen in world.before.items():
        assert after[part] == seen, part


def test_the_documented_exceptions_are_the_tables_exemptions() -> None:
    exempt = {(name, op) for name, service in BUILT.items() for op in service.authorizer.exemptions}
    assert exempt == NO_PERMISSION_NEEDED


def test_a_user_is_denied_even_on_its_own_credentials(world: World) -> None:
    """Without UserName, GetUser and the access-key operations target the caller's own user; AWS still
    requires the permission for that."""
    client = world.denied.client("iam")
    own = world.denied.arn
    for call, kwargs in (
        (client.get_user, {}),
        (client.list_access_keys, {}),
        (client.create_access_key, {}),
        (client.update_access_key, {"AccessKeyId": world.denied.access_key_id, "Status": "Inactive"}),
        (client.delete_access_key, {"AccessKeyId": world.denied.access_key_id}),
    ):
        with pytest.raises(ClientError) as excinfo:
            call(**kwargs)
        error = excinfo.value.response["Error"]
        assert error["Code"] == "AccessDenied"
        assert f"on resource: {own} " in error["Message"]
    # Nothing changed: the key still works.
    assert world.denied.client("sts").get_caller_identity()["Arn"] == own


@pytest.mark.parametrize("operation", ["TagResource", "CreateSecret"])
def test_a_secrets_manager_tag_without_a_key_is_not_a_server_error(world: World, operation: str) -> None:
    client = world.denied.client("secretsmanager", validate=False)
    params: dict[str, Any] = {"Tags": [{"Value": "v"}]}
    if operation == "TagResource":
        params["SecretId"] = world.values["SecretId"]
    else:
        params["Name"] = f"every/{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as excinfo:
        getattr(client, xform_name(operation))(**params)
    # Found by the generated test above (it was a 500): the model makes a Tag's Key optional.
    assert excinfo.value.response["Error"]["Code"] == "InvalidParameterException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
