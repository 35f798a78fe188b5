"""Offset paging with tokens bound to the call that returned them (a token from another listing fails)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TypeVar

from khoa.services.accessanalyzer import errors

T = TypeVar("T")
DEFAULT_PAGE = 100


def _tag(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def page(
    items: list[T], max_results: int | None, token: str | None, fingerprint: str
) -> tuple[list[T], str | None]:
    """One page of ``items`` and the token of the next (None at the end)."""
    if max_results is not None and max_results < 1:
        raise errors.validation("maxResults must be greater than or equal to 1.")
    limit = min(max_results or DEFAULT_PAGE, 1000)
    start = 0
    if token:
        try:
            start, tag = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, TypeError, binascii.Error):
            raise errors.validation("Invalid nextToken.") from None
        if not isinstance(start, int) or start < 0 or tag != _tag(fingerprint):
            raise errors.validation("Invalid nextToken.")
    chunk = items[start : start + limit]
    following = start + limit
    if following >= len(items):
        return chunk, None
    return chunk, base64.urlsafe_b64encode(json.dumps([following, _tag(fingerprint)]).encode()).decode()
