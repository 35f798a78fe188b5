"""Rows to the response structures of the IAM model (User, Group, Role, Policy, PolicyVersion…).

Pure functions: whatever a structure shows beyond its row (tags, usage counts, last use) is read by
the store and passed in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.services.iam import documents
from khoa.services.iam.store import PolicyRecord

DEFAULT_MAX_SESSION = 3600


def boundary(arn: str | None) -> dict[str, str] | None:
    if not arn:
        return None
    return {"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": arn}


def user(row: Row[Any]) -> dict[str, Any]:
    """A User as List* operations show it."""
    return {
        "Path": row.path,
        "UserName": row.name,
        "UserId": row.principal_id,
        "Arn": row.arn,
        "CreateDate": row.created_at,
    }


def user_detail(row: Row[Any], tags: list[dict[str, str]]) -> dict[str, Any]:
    """A User with its boundary and tags, as GetUser and CreateUser show it (as AWS does)."""
    out = user(row)
    out["PermissionsBoundary"] = boundary(row.permissions_boundary)
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


def role(row: Row[Any]) -> dict[str, Any]:
    """A Role as List* operations show it."""
    return {
        "Path": row.path,
        "RoleName": row.name,
        "RoleId": row.principal_id,
        "Arn": row.arn,
        "CreateDate": row.created_at,
        "AssumeRolePolicyDocument": documents.encode(row.assume_role_policy),
        "Description": row.description,
        "MaxSessionDuration": row.max_session_duration or DEFAULT_MAX_SESSION,
    }


def role_detail(row: Row[Any], tags: list[dict[str, str]]) -> dict[str, Any]:
    """A Role with its boundary and tags (CreateRole; GetRole adds RoleLastUsed: :func:`last_used`)."""
    out = role(row)
    out["PermissionsBoundary"] = boundary(row.permissions_boundary)
    if tags:
        out["Tags"] = tags
    return out


def last_used(when: float | None) -> dict[str, Any]:
    """RoleLastUsed: when the role was last assumed; empty when it never was."""
    return {"LastUsedDate": when} if when is not None else {}


def policy(record: PolicyRecord, *, description: bool = True, tags: bool = True) -> dict[str, Any]:
    row = record.row
    out: dict[str, Any] = {
        "PolicyName": row.name,
        "PolicyId": row.policy_id,
        "Arn": row.arn,
        "Path": row.path,
        "DefaultVersionId": row.default_version,
        "AttachmentCount": record.attached,
        "PermissionsBoundaryUsageCount": record.boundaries,
        "IsAttachable": True,
        "CreateDate": row.created_at,
        "UpdateDate": row.updated_at,
    }
    if description and row.description:
        out["Description"] = row.description
    if tags and record.tags:
        out["Tags"] = record.tags
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
