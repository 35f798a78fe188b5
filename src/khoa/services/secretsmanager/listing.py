"""ListSecrets and BatchGetSecretValue: filtered, sorted, paged queries whose cost follows the page.

Paging is keyset-based on the sort column plus the secret id, so page N costs what page 1 costs no
matter how many secrets are stored.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import errors, names, operations
from khoa.services.secretsmanager.store import SECRETS, TAGS, SecretRecord

_SORT_COLUMNS = {
    "created-date": SECRETS.c.created_at,
    "last-changed-date": SECRETS.c.last_changed_at,
    "last-accessed-date": SECRETS.c.last_accessed_at,
    "name": SECRETS.c.name,
}


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _condition(key: str, value: str) -> ColumnElement[bool]:
    negate = value.startswith("!")
    value = value[1:] if negate else value
    prefix = _like_prefix(value)
    condition: ColumnElement[bool]
    if key == "name":
        condition = SECRETS.c.name.like(prefix, escape="\\")
    elif key == "description":
        condition = func.lower(SECRETS.c.description).like(prefix.lower(), escape="\\")
    elif key == "tag-key":
        condition = (
            exists()
            .where(TAGS.c.secret_id == SECRETS.c.secret_id)
            .where(TAGS.c.tag_key.like(prefix, escape="\\"))
        )
    elif key == "tag-value":
        condition = (
            exists()
            .where(TAGS.c.secret_id == SECRETS.c.secret_id)
            .where(TAGS.c.tag_value.like(prefix, escape="\\"))
        )
    elif key == "primary-region":
        condition = func.coalesce(SECRETS.c.primary_region, SECRETS.c.region).like(prefix, escape="\\")
    elif key == "owning-service":
        condition = SECRETS.c.owning_service.like(prefix, escape="\\")
    else:  # "all": every word must appear in some attribute, case-insensitively
        words = [w for w in value.lower().split() if w]
        per_word = []
        for word in words:
            pattern = "%" + _like_prefix(word)
            per_word.append(
                or_(
                    func.lower(SECRETS.c.name).like(pattern, escape="\\"),
                    func.lower(func.coalesce(SECRETS.c.description, "")).like(pattern, escape="\\"),
                    exists()
                    .where(TAGS.c.secret_id == SECRETS.c.secret_id)
                    .where(
                        or_(
                            func.lower(TAGS.c.tag_key).like(pattern, escape="\\"),
                            func.lower(TAGS.c.tag_value).like(pattern, escape="\\"),
                        )
                    ),
                )
            )
        condition = and_(*per_word) if per_word else SECRETS.c.secret_id.is_not(None)
    return not_(condition) if negate else condition


def filter_conditions(filters: list[dict[str, Any]]) -> list[ColumnElement[bool]]:
    conditions = []
    for item in filters:
        values = item.get("Values") or []
        if not values:
            raise errors.invalid_parameter(f"Filter {item.get('Key')} needs at least one value.")
        conditions.append(or_(*[_condition(item["Key"], v) for v in values]))
    return conditions


def _encode_token(sort_value: Any, secret_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort_value, secret_id]).encode()).decode()


def _decode_token(token: str) -> tuple[Any, str]:
    try:
        sort_value, secret_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError):
        raise errors.invalid_next_token() from None
    if not isinstance(secret_id, str):
        raise errors.invalid_next_token()
    return sort_value, secret_id


def query_page(
    ctx: RequestContext,
    filters: list[dict[str, Any]],
    *,
    include_deleted: bool,
    limit: int,
    token: str | None,
    sort_by: str = "created-date",
    descending: bool = False,
) -> tuple[list[SecretRecord], str | None]:
    column = _SORT_COLUMNS[sort_by]
    key = func.coalesce(column, -1.0) if sort_by == "last-accessed-date" else column
    query = (
        select(SECRETS).where(SECRETS.c.account_id == ctx.account_id).where(SECRETS.c.region == ctx.region)
    )
    if not include_deleted:
        query = query.where(SECRETS.c.deleted_at.is_(None))
    for condition in filter_conditions(filters):
        query = query.where(condition)
    if token:
        sort_value, secret_id = _decode_token(token)
        if descending:
            query = query.where(
                or_(key < sort_value, and_(key == sort_value, SECRETS.c.secret_id < secret_id))
            )
        else:
            query = query.where(
                or_(key > sort_value, and_(key == sort_value, SECRETS.c.secret_id > secret_id))
            )
    order = (key.desc(), SECRETS.c.secret_id.desc()) if descending else (key.asc(), SECRETS.c.secret_id.asc())
    with ctx.runtime.secrets.engine.connect() as conn:
        rows = conn.execute(query.order_by(*order).limit(limit + 1)).all()
    records = [SecretRecord.from_row(r) for r in rows[:limit]]
    next_token = None
    if len(rows) > limit:
        last = records[-1]
        value = getattr(
            last,
            {
                "created-date": "created_at",
                "last-changed-date": "last_changed_at",
                "last-accessed-date": "last_accessed_at",
                "name": "name",
            }[sort_by],
        )
        if value is None:
            value = -1.0
        next_token = _encode_token(value, last.secret_id)
    return records, next_token


def list_secrets(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    records, next_token = query_page(
        ctx,
        params.get("Filters", []),
        include_deleted=params.get("IncludePlannedDeletion", False),
        limit=params.get("MaxResults", 100),
        token=params.get("NextToken"),
        sort_by=params.get("SortBy", "created-date"),
        descending=params.get("SortOrder") == "desc",
    )
    ids = [r.secret_id for r in records]
    tags = ctx.runtime.secrets.store.many_tags(ids)
    labels = ctx.runtime.secrets.store.many_stages(ids)
    result: dict[str, Any] = {
        "SecretList": [
            operations.describe(ctx, r, list_entry=True, tags=tags[r.secret_id], labels=labels[r.secret_id])
            for r in records
        ]
    }
    if next_token:
        result["NextToken"] = next_token
    return result


def batch_get_secret_value(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ids = params.get("SecretIdList")
    filters = params.get("Filters")
    if ids and filters:
        raise errors.invalid_parameter("Either 'SecretIdList' or 'Filters' must be provided, but not both.")
    if not ids and not filters:
        raise errors.invalid_parameter("Either 'SecretIdList' or 'Filters' must be provided.")
    values: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    next_token = None
    if ids:
        if params.get("MaxResults") is not None:
            raise errors.invalid_parameter("MaxResults can't be used with SecretIdList.")
        records: list[tuple[str, SecretRecord | None]] = [
            (i, names.find(ctx, ctx.runtime.secrets.store, i)) for i in ids
        ]
    else:
        found, next_token = query_page(
            ctx,
            filters or [],
            include_deleted=False,
            limit=params.get("MaxResults", 20),
            token=params.get("NextToken"),
        )
        records = [(r.arn, r) for r in found]
    for secret_id, record in records:
        try:
            if record is None:
                raise errors.not_found()
            if record.deleted_at is not None:
                raise errors.marked_for_deletion()
            from khoa.services.secretsmanager.authz import authorize_secret

            authorize_secret(ctx, "secretsmanager:GetSecretValue", record, {})
            entry = operations.read_value(ctx, record, None, None)
            values.append(entry)
        except AWSError as error:
            failures.append({"SecretId": secret_id, "ErrorCode": error.code, "Message": error.message or ""})
    result: dict[str, Any] = {"SecretValues": values, "Errors": failures}
    if next_token:
        result["NextToken"] = next_token
    return result


OPERATIONS = {"ListSecrets": list_secrets, "BatchGetSecretValue": batch_get_secret_value}
