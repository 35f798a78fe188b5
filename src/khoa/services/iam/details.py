"""GetAccountAuthorizationDetails: every user, group, role and managed policy of the account with their
inline policies, attachments, memberships, boundaries and tags, in one (paginated) answer."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from khoa.protocol.context import RequestContext
from khoa.services.iam import aws_managed, documents, paging, views
from khoa.services.iam.store import (
    ATTACHMENTS,
    GROUP,
    INLINE,
    MANAGED,
    MEMBERS,
    PRINCIPALS,
    ROLE,
    TAGS,
    USER,
    VERSIONS,
)

_ALL = ["User", "Group", "Role", "LocalManagedPolicy", "AWSManagedPolicy"]


def get_account_authorization_details(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    wanted = set(params.get("Filter") or _ALL)
    account = ctx.account_id
    with ctx.runtime.engine.connect() as conn:
        principals = list(
            conn.execute(
                select(PRINCIPALS).where(PRINCIPALS.c.account_id == account).order_by(PRINCIPALS.c.name_lower)
            ).all()
        )
        ids = [p.principal_id for p in principals]
        by_id = {p.principal_id: p for p in principals}
        inline: dict[str, list[dict[str, Any]]] = defaultdict(list)
        attached: dict[str, list[dict[str, str]]] = defaultdict(list)
        groups_of: dict[str, list[str]] = defaultdict(list)
        tags: dict[str, list[dict[str, str]]] = defaultdict(list)
        if ids:
            for owner_id, name, document in conn.execute(
                select(INLINE.c.owner_id, INLINE.c.policy_name, INLINE.c.document)
                .where(INLINE.c.owner_id.in_(ids))
                .order_by(INLINE.c.policy_name)
            ).all():
                inline[owner_id].append({"PolicyName": name, "PolicyDocument": documents.encode(document)})
            for owner_id, name, arn in conn.execute(
                select(ATTACHMENTS.c.owner_id, MANAGED.c.name, MANAGED.c.arn)
                .join(MANAGED, MANAGED.c.arn == ATTACHMENTS.c.policy_arn)
                .where(ATTACHMENTS.c.owner_id.in_(ids))
                .order_by(func.lower(MANAGED.c.name))
            ).all():
                attached[owner_id].append({"PolicyName": name, "PolicyArn": arn})
            for group_id, user_id in conn.execute(
                select(MEMBERS.c.group_id, MEMBERS.c.user_id).where(MEMBERS.c.user_id.in_(ids))
            ).all():
                if group_id in by_id:
                    groups_of[user_id].append(by_id[group_id].name)
            for owner_id, key, value in conn.execute(
                select(TAGS.c.owner_id, TAGS.c.tag_key, TAGS.c.tag_value)
                .where(TAGS.c.owner_id.in_(ids))
                .order_by(TAGS.c.tag_key)
            ).all():
                tags[owner_id].append({"Key": key, "Value": value})
        items: list[tuple[str, dict[str, Any]]] = []
        for row in principals:
            pid = row.principal_id
            common = {"Path": row.path, "Arn": row.arn, "CreateDate": row.created_at}
            if row.kind == USER and "User" in wanted:
                detail = {"UserName": row.name, "UserId": pid, **common, "UserPolicyList": inline[pid]}
                detail["GroupList"] = sorted(groups_of[pid], key=str.lower)
                detail["AttachedManagedPolicies"] = attached[pid]
                detail["PermissionsBoundary"] = views.boundary(row.permissions_boundary)
                detail["Tags"] = tags[pid]
                items.append(("UserDetailList", detail))
            elif row.kind == GROUP and "Group" in wanted:
                detail = {"GroupName": row.name, "GroupId": pid, **common, "GroupPolicyList": inline[pid]}
                detail["AttachedManagedPolicies"] = attached[pid]
                items.append(("GroupDetailList", detail))
            elif row.kind == ROLE and "Role" in wanted:
                detail = {
                    "RoleName": row.name,
                    "RoleId": pid,
                    **common,
                    "AssumeRolePolicyDocument": documents.encode(row.assume_role_policy),
                    "InstanceProfileList": [],
                    "RolePolicyList": inline[pid],
                    "AttachedManagedPolicies": attached[pid],
                    "PermissionsBoundary": views.boundary(row.permissions_boundary),
                    "Tags": tags[pid],
                    "RoleLastUsed": {},
                }
                items.append(("RoleDetailList", detail))
        accounts = []
        if "LocalManagedPolicy" in wanted:
            accounts.append(account)
        if "AWSManagedPolicy" in wanted:
            accounts.append(aws_managed.ACCOUNT)
        for policy in conn.execute(
            select(MANAGED).where(MANAGED.c.account_id.in_(accounts)).order_by(func.lower(MANAGED.c.name))
        ).all():
            detail = views.policy(policy, conn, account, tags=False)
            if policy.account_id == aws_managed.ACCOUNT and not (
                detail["AttachmentCount"] or detail["PermissionsBoundaryUsageCount"]
            ):
                continue  # AWS-managed policies appear once this account uses them
            versions = conn.execute(select(VERSIONS).where(VERSIONS.c.policy_arn == policy.arn)).all()
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
