"""ListSecrets and BatchGetSecretValue: filtered, sorted, paged queries whose cost follows the page.

The filters and keyset paging are the store's (store.search); here the requests are checked and the
page's position travels as an opaque NextToken.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import errors, names, secrets, versions
from khoa.services.secretsmanager.authz import authorize_secret
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretRecord


def check_filters(filters: list[dict[str, Any]]) -> None:
    """Every filter names a key and at least one value (the model leaves both optional)."""
    for item in filters:
        if item.get("Key") is None:
            # Key is optional in the model but a filter means nothing without it (AWS, moto).
            raise errors.invalid_parameter("Invalid filter key")
        if not item.get("Values"):
            raise errors.invalid_parameter(f"Filter {item.get('Key')} needs at least one value.")


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
    check_filters(filters)
    records, after = sm.store.page(
        ctx.account_id,
        ctx.region,
        filters,
        include_deleted=include_deleted,
        limit=limit,
        after=_decode_token(token) if token else None,
        sort_by=sort_by,
        descending=descending,
    )
    return records, None if after is None else _encode_token(*after)


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
    tags = sm.store.many_tags(records)
    labels = sm.store.many_stages(ids)
    # replicated=False: a primary carries its primary_region while it has replicas (replication.py), so
    # the page needs no look-up of replicas to know which entries have a PrimaryRegion.
    result: dict[str, Any] = {
        "SecretList": [
            secrets.describe(
                r, tags=tags[r.secret_id], labels=labels[r.secret_id], replicated=False, list_entry=True
            )
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
