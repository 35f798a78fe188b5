"""Marker / MaxItems pagination as IAM does it: an opaque marker, IsTruncated, 100 items by default."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from khoa.protocol.errors import AWSError
from khoa.services.iam import errors

T = TypeVar("T")
DEFAULT_MAX_ITEMS = 100
_PREFIX = "khoa-iam:"
_MAX_OFFSET_DIGITS = 19  # every offset Khoa issues fits a 64-bit integer


def invalid_marker() -> AWSError:
    return errors.validation("Invalid Marker.")


def _decode(marker: str) -> int:
    """The offset a marker carries. A marker is the caller's own input: anything but ``khoa-iam:``
    and a few ASCII digits is refused (``str.isdigit`` also takes "²", which ``int`` refuses, and
    "٣", which it reads as 3)."""
    try:
        text = base64.b64decode(marker.encode(), validate=True).decode()
    except ValueError:
        raise invalid_marker() from None
    digits = text[len(_PREFIX) :]
    if not (
        text.startswith(_PREFIX)
        and 0 < len(digits) <= _MAX_OFFSET_DIGITS
        and digits.isascii()
        and digits.isdigit()
    ):
        raise invalid_marker()
    return int(digits)


def encode(offset: int) -> str:
    """The Marker of the page that starts at ``offset``."""
    return base64.b64encode(f"{_PREFIX}{offset}".encode()).decode()


def start(params: dict[str, Any]) -> int:
    """Where the requested page starts: at the request's Marker, or at 0 without one."""
    return _decode(params["Marker"]) if params.get("Marker") else 0


def paginate(items: Sequence[T], params: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` and the IsTruncated / Marker members of the response."""
    first = start(params)
    limit = params.get("MaxItems") or DEFAULT_MAX_ITEMS
    page = list(items[first : first + limit])
    truncated = first + limit < len(items)
    meta: dict[str, Any] = {"IsTruncated": truncated}
    if truncated:
        meta["Marker"] = encode(first + limit)
    return page, meta
