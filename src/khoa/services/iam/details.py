"""GetAccountAuthorizationDetails: every user, group, role and managed policy of the account with their
inline policies, attachments, memberships, boundaries and tags, in one (paginated) answer."""

from __future__ import annotations

from typing import Any

from khoa.access import aws_managed
from khoa.protocol.context import RequestContext
from khoa.services.iam import documents, paging, views
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.names import GROUP, ROLE, USER

_ALL = ["User", "Group", "Role", "LocalManagedPolicy", "AWSManagedPolicy"]


def _documents(policies: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"PolicyName": name, "PolicyDocument": documents.encode(doc)} for name, doc in policies]


def _attached(policies: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"PolicyName": name, "PolicyArn": arn} for name, arn in policies]


def get_account_authorization_details(
    iam: IamBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    wanted = set(params.get("Filter") or _ALL)
    account = ctx.account_id
    owners = []
    if "LocalManagedPolicy" in wanted:
        owners.append(account)
    if "AWSManagedPolicy" in wanted:
        owners.append(aws_managed.ACCOUNT)
    snapshot = iam.store.reports.account_snapshot(account, owners)
    items: list[tuple[str, dict[str, Any]]] = []
    for row in snapshot.principals:
        pid = row.principal_id
        common = {"Path": row.path, "Arn": row.arn, "CreateDate": row.created_at}
        inline = _documents(snapshot.inline.get(pid, []))
        attached = _attached(snapshot.attached.get(pid, []))
        if row.kind == USER and "User" in wanted:
            detail = {"UserName": row.name, "UserId": pid, **common, "UserPolicyList": inline}
            detail["GroupList"] = sorted(snapshot.group_names.get(pid, []), key=str.lower)
            detail["AttachedManagedPolicies"] = attached
            detail["PermissionsBoundary"] = views.boundary(row.permissions_boundary)
            detail["Tags"] = snapshot.tags.get(pid, [])
            items.append(("UserDetailList", detail))
        elif row.kind == GROUP and "Group" in wanted:
            detail = {"GroupName": row.name, "GroupId": pid, **common, "GroupPolicyList": inline}
            detail["AttachedManagedPolicies"] = attached
            items.append(("GroupDetailList", detail))
        elif row.kind == ROLE and "Role" in wanted:
            detail = {
                "RoleName": row.name,
                "RoleId": pid,
                **common,
                "AssumeRolePolicyDocument": documents.encode(row.assume_role_policy),
                "InstanceProfileList": [],
                "RolePolicyList": inline,
                "AttachedManagedPolicies": attached,
                "PermissionsBoundary": views.boundary(row.permissions_boundary),
                "Tags": snapshot.tags.get(pid, []),
                "RoleLastUsed": {},
            }
            items.append(("RoleDetailList", detail))
    for record, versions in snapshot.policies:
        policy = record.row
        if policy.account_id == aws_managed.ACCOUNT and not (record.attached or record.boundaries):
            continue  # AWS-managed policies appear once this account uses them
        detail = views.policy(record, tags=False)
        detail["PolicyVersionList"] = [
            views.policy_version(v, policy.default_version)
            for v in sorted(versions, key=lambda v: v.created_at, reverse=True)
        ]
        items.append(("Policies", detail))
    page, meta = paging.paginate(items, params)
    result: dict[str, Any] = {
        "UserDetailList": [],
        "GroupDetailList": [],
        "RoleDetailList": [],
        "Policies": [],
        **meta,
    }
    for bucket, detail in page:
        result[bucket].append(detail)
    return result


OPERATIONS = {"GetAccountAuthorizationDetails": get_account_authorization_details}
