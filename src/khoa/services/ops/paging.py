"""khoa-ops' NextTokens: opaque, and (as in AWS) accepted only with the filters of the call that
returned them, so a token cannot be replayed against other filters to skip rows unseen."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from khoa.protocol.errors import AWSError


def invalid_next_token() -> AWSError:
    return AWSError("InvalidNextTokenException", "Invalid NextToken.")


def fingerprint(filters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]


def encode(position: Any, filters: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([position, fingerprint(filters)]).encode()).decode()


def decode(token: str, filters: dict[str, Any]) -> Any:
    """The position ``encode`` was given; InvalidNextTokenException for anything else."""
    try:
        position, expected = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise invalid_next_token() from None
    if expected != fingerprint(filters):
        raise invalid_next_token()
    return position
