"""Customer-managed policies and their versions: CreatePolicy, GetPolicy, DeletePolicy, ListPolicies,
CreatePolicyVersion, GetPolicyVersion, ListPolicyVersions, DeletePolicyVersion, SetDefaultPolicyVersion.

A policy keeps at most five versions; exactly one is the default, and only the default takes effect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.access import aws_managed
from khoa.protocol.context import RequestContext
from khoa.services.iam import documents, errors, paging, tags, views
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_policy
from khoa.services.iam.names import new_id, policy_arn


def _validate(document: str) -> None:
    documents.validate_identity(document)
    if documents.size(document) > documents.MANAGED_POLICY_SIZE:
        raise errors.quota("PolicySize", documents.MANAGED_POLICY_SIZE)


def _own(iam: IamBackend, ctx: RequestContext, arn: str) -> Row[Any]:
    """A policy this account may change: its own, never an AWS-managed one."""
    row = lookup_policy(iam.store, ctx, arn)
    if row.account_id != ctx.account_id:
        raise errors.invalid_input(f"Policy {arn} is an AWS managed policy and cannot be modified.")
    return row


def create_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["PolicyName"]
    path = params.get("Path", "/")
    document = params["PolicyDocument"]
    new_tags = params.get("Tags") or []
    if new_tags:
        tags.validate(new_tags)
    _validate(document)
    record = iam.store.policies.create(
        ctx.account_id,
        {
            "arn": policy_arn(ctx.account_id, path, name),
            "policy_id": new_id("policy"),
            "name": name,
            "path": path,
            "description": params.get("Description"),
            "created_at": ctx.now.timestamp(),
        },
        document,
        new_tags,
    )
    return {"Policy": views.policy(record)}


def get_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_policy(iam.store, ctx, params["PolicyArn"])
    return {"Policy": views.policy(iam.store.policies.describe(row, ctx.account_id))}


def delete_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    iam.store.policies.delete(_own(iam, ctx, params["PolicyArn"]), ctx.account_id)
    return {}


def list_policies(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    scope = params.get("Scope", "All")
    prefix = params.get("PathPrefix")
    usage = params.get("PolicyUsageFilter")
    owners = {"All": [ctx.account_id, aws_managed.ACCOUNT], "AWS": [aws_managed.ACCOUNT]}.get(
        scope, [ctx.account_id]
    )
    if aws_managed.ACCOUNT in owners:
        iam.store.policies.store_aws_managed()
    items = []
    for record in iam.store.policies.listing(owners, ctx.account_id):
        if prefix and not record.row.path.startswith(prefix):
            continue
        if params.get("OnlyAttached") and not (record.attached or record.boundaries):
            continue
        if usage == "PermissionsPolicy" and not record.attached:
            continue
        if usage == "PermissionsBoundary" and not record.boundaries:
            continue
        items.append(views.policy(record, description=False, tags=False))
    page, meta = paging.paginate(items, params)
    return {"Policies": page, **meta}


def create_policy_version(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = _own(iam, ctx, params["PolicyArn"])
    document = params["PolicyDocument"]
    _validate(document)
    make_default = bool(params.get("SetAsDefault"))
    created = ctx.now.timestamp()
    version_id = iam.store.policies.create_version(policy.arn, document, make_default, created)
    return {
        "PolicyVersion": {"VersionId": version_id, "IsDefaultVersion": make_default, "CreateDate": created}
    }


def get_policy_version(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(iam.store, ctx, params["PolicyArn"])
    version = iam.store.policies.version(policy.arn, params["VersionId"])
    return {"PolicyVersion": views.policy_version(version, policy.default_version)}


def _version_number(version_id: str) -> int:
    digits = version_id[1:].split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


def list_policy_versions(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(iam.store, ctx, params["PolicyArn"])
    rows = iam.store.policies.versions(policy.arn)
    rows.sort(key=lambda r: _version_number(r.version_id), reverse=True)
    page, meta = paging.paginate(rows, params)
    versions = [views.policy_version(r, policy.default_version, document=False) for r in page]
    return {"Versions": versions, **meta}


def delete_policy_version(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = _own(iam, ctx, params["PolicyArn"])
    iam.store.policies.delete_version(policy.arn, params["VersionId"])
    return {}


def set_default_policy_version(
    iam: IamBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    policy = _own(iam, ctx, params["PolicyArn"])
    iam.store.policies.set_default_version(policy.arn, params["VersionId"])
    return {}


OPERATIONS = {
    "CreatePolicy": create_policy,
    "GetPolicy": get_policy,
    "DeletePolicy": delete_policy,
    "ListPolicies": list_policies,
    "CreatePolicyVersion": create_policy_version,
    "GetPolicyVersion": get_policy_version,
    "ListPolicyVersions": list_policy_versions,
    "DeletePolicyVersion": delete_policy_version,
    "SetDefaultPolicyVersion": set_default_policy_version,
}
