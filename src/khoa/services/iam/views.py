"""Rows to the response structures of the IAM model (User, Group, Role, Policy, AttachedPolicy…)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.engine import Connection

from khoa.services.iam import documents
from khoa.services.iam.store import ATTACHMENTS, PRINCIPALS, tags_of
from khoa.storage import schema

DEFAULT_MAX_SESSION = 3600


def boundary(arn: str | None) -> dict[str, str] | None:
    if not arn:
        return None
    return {"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": arn}


def user(row: Row[Any], conn: Connection | None = None) -> dict[str, Any]:
    """A User; with ``conn``, also its boundary and tags (GetUser, CreateUser), as AWS does."""
    out: dict[str, Any] = {
        "Path": row.path,
        "UserName": row.name,
        "UserId": row.principal_id,
        "Arn": row.arn,
        "CreateDate": row.created_at,
    }
    if conn is not None:
        out["PermissionsBoundary"] = boundary(row.permissions_boundary)
        tags = tags_of(conn, row.principal_id)
        if tags:
            out["Tags"] = tags
    return out


def group(row: Row[Any]) -> dict[str, Any]:
    return {
        "Path": row.path,
        "GroupName": row.name,
        "GroupId": row.principal_id,
        "Arn": row.arn,
        "CreateDate": row.created_at,
    }


def role(row: Row[Any], conn: Connection | None = None) -> dict[str, Any]:
    """A Role; with ``conn``, also boundary, tags and RoleLastUsed (GetRole, CreateRole)."""
    out: dict[str, Any] = {
        "Path": row.path,
        "RoleName": row.name,
        "RoleId": row.principal_id,
        "Arn": row.arn,
        "CreateDate": row.created_at,
        "AssumeRolePolicyDocument": documents.encode(row.assume_role_policy),
        "Description": row.description,
        "MaxSessionDuration": row.max_session_duration or DEFAULT_MAX_SESSION,
    }
    if conn is not None:
        out["PermissionsBoundary"] = boundary(row.permissions_boundary)
        tags = tags_of(conn, row.principal_id)
        if tags:
            out["Tags"] = tags
        out["RoleLastUsed"] = role_last_used(conn, row.principal_id)
    return out


def role_last_used(conn: Connection, role_id: str) -> dict[str, Any]:
    """When the role was last assumed (its latest STS session); empty when it never was."""
    sessions = schema.sts_sessions
    last = conn.execute(select(func.max(sessions.c.created_at)).where(sessions.c.role_id == role_id)).scalar()
    return {"LastUsedDate": last} if last is not None else {}


def usage_counts(conn: Connection, account_id: str, arn: str) -> tuple[int, int]:
    """How many of this account's entities have the policy attached, and use it as their boundary."""
    attached = conn.execute(
        select(func.count())
        .select_from(ATTACHMENTS.join(PRINCIPALS, PRINCIPALS.c.principal_id == ATTACHMENTS.c.owner_id))
        .where(ATTACHMENTS.c.policy_arn == arn)
        .where(PRINCIPALS.c.account_id == account_id)
    ).scalar_one()
    boundaries = conn.execute(
        select(func.count())
        .select_from(PRINCIPALS)
        .where(PRINCIPALS.c.permissions_boundary == arn)
        .where(PRINCIPALS.c.account_id == account_id)
    ).scalar_one()
    return int(attached), int(boundaries)


def policy(
    row: Row[Any], conn: Connection, account_id: str, *, description: bool = True, tags: bool = True
) -> dict[str, Any]:
    attached, boundaries = usage_counts(conn, account_id, row.arn)
    out: dict[str, Any] = {
        "PolicyName": row.name,
        "PolicyId": row.policy_id,
        "Arn": row.arn,
        "Path": row.path,
        "DefaultVersionId": row.default_version,
        "AttachmentCount": attached,
        "PermissionsBoundaryUsageCount": boundaries,
        "IsAttachable": True,
        "CreateDate": row.created_at,
        "UpdateDate": row.updated_at,
    }
    if description and row.description:
        out["Description"] = row.description
    if tags:
        found = tags_of(conn, row.policy_id)
        if found:
            out["Tags"] = found
    return out


def policy_version(row: Row[Any], default_version: str, *, document: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "VersionId": row.version_id,
        "IsDefaultVersion": row.version_id == default_version,
        "CreateDate": row.created_at,
    }
    if document:
        out["Document"] = documents.encode(row.document)
    return out
