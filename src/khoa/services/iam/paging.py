"""Marker / MaxItems pagination as IAM does it: an opaque marker, IsTruncated, 100 items by default."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from khoa.services.iam import errors

T = TypeVar("T")
DEFAULT_MAX_ITEMS = 100
_PREFIX = "khoa-iam:"


def _decode(marker: str) -> int:
    try:
        text = base64.b64decode(marker.encode(), validate=True).decode()
    except ValueError:
        raise errors.validation("Invalid Marker.") from None
    if not text.startswith(_PREFIX) or not text[len(_PREFIX) :].isdigit():
        raise errors.validation("Invalid Marker.")
    return int(text[len(_PREFIX) :])


def _encode(offset: int) -> str:
    return base64.b64encode(f"{_PREFIX}{offset}".encode()).decode()


def paginate(items: Sequence[T], params: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` and the IsTruncated / Marker members of the response."""
    start = _decode(params["Marker"]) if params.get("Marker") else 0
    limit = params.get("MaxItems") or DEFAULT_MAX_ITEMS
    page = list(items[start : start + limit])
    truncated = start + limit < len(items)
    meta: dict[str, Any] = {"IsTruncated": truncated}
    if truncated:
        meta["Marker"] = _encode(start + limit)
    return page, meta
