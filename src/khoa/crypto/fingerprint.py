"""Keyed fingerprints of the values Khoa holds, for leak detection (khoa-leaks CheckLeakedValues).

A fingerprint is HMAC-SHA256 under one per-installation key (32 random bytes, stored sealed by the
barrier): equal values give equal fingerprints, so a candidate found in a repository can be matched
against every secret, parameter and credential without keeping or comparing a value in the clear, and
a copy of the database without the root key cannot test guesses offline (a plain hash could be).

What is fingerprinted of a secret string (:func:`secret_string_items`): the whole string and, when it
is a JSON object or array, each non-empty string leaf under its path (``password``, ``db.password``,
``hosts[0]``) — except the few leaves that name where a database is rather than how to log in to it
(``host``, ``port``, ``engine``, ``dbname``, ``username``...: see ``NOT_SECRET_FIELDS``), which are
found in any configuration file and would make every mention of ``localhost`` a "leak".
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac

KEY_BYTES = 32
# Leaves of a JSON secret that say where a database is or who logs in, not a credential: AWS's
# rotation templates' connection fields. Everything else that is a string is fingerprinted.
NOT_SECRET_FIELDS = frozenset(
    {
        "engine",
        "host",
        "port",
        "dbname",
        "username",
        "dbclusteridentifier",
        "dbinstanceidentifier",
        "masterarn",
        "proxyname",
    }
)
# A leaf path longer than this is not recorded (a field name column of 256 characters).
_MAX_FIELD = 256


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


class Fingerprinter:
    """Computes fingerprints with the installation's fingerprint key (never logged, never returned)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the fingerprint key must be 256 bits")
        self._key = key

    def digest(self, value: str | bytes) -> str:
        """The fingerprint of ``value`` (text is taken as UTF-8), as 64 hex digits."""
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        mac = hmac.HMAC(self._key, hashes.SHA256())
        mac.update(data)
        return mac.finalize().hex()

    def secret_string_items(self, value: str) -> list[tuple[str | None, str]]:
        """(field, fingerprint) of a SecretString: the whole value (field None) and its JSON leaves."""
        items: list[tuple[str | None, str]] = [(None, self.digest(value))]
        seen = {items[0][1]}
        for field, leaf in json_leaves(value):
            digest = self.digest(leaf)
            if digest not in seen:
                seen.add(digest)
                items.append((field, digest))
        return items

    def secret_binary_items(self, value: bytes) -> list[tuple[str | None, str]]:
        """(field, fingerprint) of a SecretBinary: its bytes, and its base64 text (how binary values
        end up in files), both with field None."""
        raw, text = self.digest(value), self.digest(base64.b64encode(value))
        return [(None, raw)] if raw == text else [(None, raw), (None, text)]


def json_leaves(value: str) -> Iterator[tuple[str, str]]:
    """(path, text) of each non-empty string leaf of a JSON object or array; nothing for other text."""
    stripped = value.lstrip()
    if not stripped.startswith(("{", "[")):
        return
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return
    yield from _walk(document, "")


def _walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, child in node.items():
            if isinstance(child, str) and str(key).lower() in NOT_SECRET_FIELDS:
                continue
            yield from _walk(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, f"{path}[{index}]")
    elif isinstance(node, str) and node and path and len(path) <= _MAX_FIELD:
        yield path, node
