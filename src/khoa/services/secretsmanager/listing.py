"""ListSecrets and BatchGetSecretValue: filtered, sorted, paged queries whose cost follows the page.

Paging is keyset-based on the sort column plus the secret id, so page N costs what page 1 costs no
matter how many secrets are stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import errors, names, secrets, versions
from khoa.services.secretsmanager.authz import authorize_secret
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SECRETS, TAGS, SecretRecord

_SORT_COLUMNS = {
    "created-date": SECRETS.c.created_at,
    "last-changed-date": SECRETS.c.last_changed_at,
    "last-accessed-date": SECRETS.c.last_accessed_at,
    "name": SECRETS.c.name,
}


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _starts_with(column: Any, value: str) -> ColumnElement[bool]:
    """Case-sensitive prefix match on every database (SQLite's LIKE ignores ASCII case): LIKE lets
    PostgreSQL use an index, the substring comparison makes the match exact."""
    return and_(column.like(_like_prefix(value), escape="\\"), func.substr(column, 1, len(value)) == value)


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """Split text into the words Secrets Manager's "all" search matches: runs of letters or digits,
    also split where lowercase turns to uppercase (``credsDatabase#892`` → creds, database, 892)."""
    return [w.lower() for w in _WORD.findall(text)]


def _tag_exists(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(TAGS.c.secret_id == SECRETS.c.secret_id).where(condition)


def _condition(key: str, value: str) -> ColumnElement[bool] | None:
    """The SQL for one filter value; None where only the exact check in :func:`_matches_all` decides."""
    negate = value.startswith("!")
    value = value[1:] if negate else value
    condition: ColumnElement[bool]
    if key == "name":
        condition = _starts_with(SECRETS.c.name, value)
    elif key == "description":
        condition = func.lower(func.coalesce(SECRETS.c.description, "")).like(
            _like_prefix(value.lower()), escape="\\"
        )
    elif key == "tag-key":
        condition = _tag_exists(_starts_with(TAGS.c.tag_key, value))
    elif key == "tag-value":
        condition = _tag_exists(_starts_with(TAGS.c.tag_value, value))
    elif key == "primary-region":
        condition = _starts_with(func.coalesce(SECRETS.c.primary_region, SECRETS.c.region), value)
    elif key == "owning-service":
        condition = _starts_with(func.coalesce(SECRETS.c.owning_service, ""), value)
    else:
        # "all": a cheap superset in SQL (some attribute contains one of the words); the word-prefix
        # rule is applied to the rows found. Negated values can only be decided on the rows.
        if negate:
            return None
        per_word = []
        for word in words(value):
            pattern = "%" + _like_prefix(word)
            per_word.append(
                or_(
                    func.lower(SECRETS.c.name).like(pattern, escape="\\"),
                    func.lower(func.coalesce(SECRETS.c.description, "")).like(pattern, escape="\\"),
                    _tag_exists(
                        or_(
                            func.lower(TAGS.c.tag_key).like(pattern, escape="\\"),
                            func.lower(TAGS.c.tag_value).like(pattern, escape="\\"),
                        )
                    ),
                )
            )
        condition = or_(*per_word) if per_word else SECRETS.c.secret_id.is_(None)
    return not_(condition) if negate else condition


def filter_conditions(filters: list[dict[str, Any]]) -> list[ColumnElement[bool]]:
    """AND across filters, OR across the values of one filter."""
    conditions = []
    for item in filters:
        if item.get("Key") is None:
            # Key is optional in the model but a filter means nothing without it (AWS, moto).
            raise errors.invalid_parameter("Invalid filter key")
        values = item.get("Values") or []
        if not values:
            raise errors.invalid_parameter(f"Filter {item.get('Key')} needs at least one value.")
        parts = [_condition(item["Key"], v) for v in values]
        if any(part is None for part in parts):
            continue  # an exact check on the rows decides this filter
        conditions.append(or_(*[p for p in parts if p is not None]))
    return conditions


def _matches_all(value: str, attributes: list[str]) -> bool:
    """Whether a secret matches one "all" value: some word of the value starts some word of the
    secret's name, description, tag keys or tag values (not case-sensitive); "!" negates."""
    negate = value.startswith("!")
    wanted = words(value[1:] if negate else value)
    have = [w for attribute in attributes for w in words(attribute)]
    found = any(h.startswith(w) for w in wanted for h in have)
    return found != negate


def _row_check(filters: list[dict[str, Any]]) -> Callable[[SecretRecord, list[dict[str, str]]], bool] | None:
    all_filters = [item.get("Values") or [] for item in filters if item.get("Key") == "all"]
    if not all_filters:
        return None

    def check(record: SecretRecord, tags: list[dict[str, str]]) -> bool:
        attributes = [record.name, record.description or ""]
        attributes += [t["Key"] for t in tags] + [t["Value"] for t in tags]
        return all(any(_matches_all(v, attributes) for v in values) for values in all_filters)

    return check


def _encode_token(sort_value: Any, secret_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort_value, secret_id]).encode()).decode()


def _decode_token(token: str) -> tuple[Any, str]:
    try:
        sort_value, secret_id = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, TypeError, UnicodeError, RecursionError):
        raise errors.invalid_next_token() from None
    # Only what _encode_token writes reaches SQL: a name or a finite number SQLite and PostgreSQL can
    # compare (no lists, no 2**64, no NaN, no NUL).
    if not isinstance(secret_id, str) or "\x00" in secret_id or not _sortable(sort_value):
        raise errors.invalid_next_token()
    return sort_value, secret_id


def _sortable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def query_page(
    sm: SecretsBackend,
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
    query = query.order_by(*order)
    check = _row_check(filters)
    if check is None:
        with sm.engine.connect() as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
        found = [SecretRecord.from_row(r) for r in rows]
    else:
        found = _checked_rows(sm, query, check, limit + 1)
    records = found[:limit]
    next_token = None
    if len(found) > limit:
        last = records[-1]
        value = getattr(last, _SORT_ATTRIBUTES[sort_by])
        if value is None:
            value = -1.0
        next_token = _encode_token(value, last.secret_id)
    return records, next_token


_SORT_ATTRIBUTES = {
    "created-date": "created_at",
    "last-changed-date": "last_changed_at",
    "last-accessed-date": "last_accessed_at",
    "name": "name",
}
_CHECK_BATCH = 200


def _checked_rows(
    sm: SecretsBackend,
    query: Any,
    check: Callable[[SecretRecord, list[dict[str, str]]], bool],
    wanted: int,
) -> list[SecretRecord]:
    """Rows of ``query`` (already ordered) that pass ``check``, read in batches until ``wanted`` pass."""
    found: list[SecretRecord] = []
    offset = 0
    while len(found) < wanted:
        with sm.engine.connect() as conn:
            rows = conn.execute(query.limit(_CHECK_BATCH).offset(offset)).all()
        batch = [SecretRecord.from_row(r) for r in rows]
        tags = sm.store.many_tags([r.secret_id for r in batch])
        found.extend(r for r in batch if check(r, tags[r.secret_id]))
        if len(rows) < _CHECK_BATCH:
            break
        offset += _CHECK_BATCH
    return found[:wanted]


def list_secrets(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    records, next_token = query_page(
        sm,
        ctx,
        params.get("Filters", []),
        include_deleted=params.get("IncludePlannedDeletion", False),
        limit=params.get("MaxResults", 100),
        token=params.get("NextToken"),
        sort_by=params.get("SortBy", "created-date"),
        descending=params.get("SortOrder") == "desc",
    )
    ids = [r.secret_id for r in records]
    tags = sm.store.many_tags(ids)
    labels = sm.store.many_stages(ids)
    result: dict[str, Any] = {
        "SecretList": [
            secrets.describe(sm, r, list_entry=True, tags=tags[r.secret_id], labels=labels[r.secret_id])
            for r in records
        ]
    }
    if next_token:
        result["NextToken"] = next_token
    return result


def batch_get_secret_value(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
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
        if params.get("NextToken"):
            _decode_token(params["NextToken"])  # never ignore a token the service did not issue
        if params.get("MaxResults") is not None:
            raise errors.invalid_parameter(
                "'Filters' not specified. 'Filters' must also be specified when 'MaxResults' is provided."
            )
        records: list[tuple[str, SecretRecord | None]] = []
        for secret_id in ids:
            try:
                records.append((secret_id, names.find(ctx, sm.store, secret_id)))
            except AWSError as error:
                failures.append(
                    {"SecretId": secret_id, "ErrorCode": error.code, "Message": error.message or ""}
                )
    else:
        found, next_token = query_page(
            sm,
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
            authorize_secret(sm, ctx, "secretsmanager:GetSecretValue", record, {})
            entry = versions.read_value(sm, ctx, record, None, None)
            values.append(entry)
        except AWSError as error:
            failures.append({"SecretId": secret_id, "ErrorCode": error.code, "Message": error.message or ""})
    result: dict[str, Any] = {"SecretValues": values, "Errors": failures}
    if next_token:
        result["NextToken"] = next_token
    return result


OPERATIONS = {"ListSecrets": list_secrets, "BatchGetSecretValue": batch_get_secret_value}
