"""Keyed fingerprints of the values Khoa holds, for leak detection (khoa-leaks CheckLeakedValues).

A fingerprint is HMAC-SHA256 under one per-installation key (32 random bytes, stored sealed by the
barrier): equal values give equal fingerprints, so a candidate found in a repository can be matched
against every secret, parameter and credential without keeping or comparing a value in the clear, and
a copy of the database without the root key cannot test guesses offline (a plain hash could be).

What is fingerprinted of a secret string (:func:`secret_string_items`): the whole string and, when it
is a JSON object or array, each string leaf under its path (``password``, ``db.password``,
``hosts[0]``) that is plausibly secret (:func:`plausibly_secret`). A leaf is evidence of a leak only
if holding it proves the secret compromised; ``"us-east-1"`` or ``"true"`` is in thousands of files,
so fingerprinting it would let anyone who knows a common word find (and, through ReportLeakedValues,
rotate) every secret that contains it. The rule, on the leaf's field (the last key of its path,
lower-cased, without ``_``, ``-`` or other punctuation, a trailing ``s`` ignored) and its text:

1. never a leaf under a field that names where or who rather than a credential: the connection
   fields of AWS's rotation templates (``NOT_SECRET_FIELDS``: ``host``, ``port``, ``username``...),
   and any field ending in one of ``NOT_SECRET_SUFFIXES`` (``…id``, ``…arn``, ``…name``, ``…user``,
   ``…region``, ``…publickey``, ``…certificate``...);
2. never a text that is a boolean, null or number word (``true``, ``no``, ``null``, ``5432``,
   ``1.5``) or an access key id (``AKIA…``/``ASIA…``: an id is not a secret, see khoa-leaks' check.py);
3. under a field ending in one of ``SECRET_SUFFIXES`` (``password``, ``passwd``, ``pwd``,
   ``passphrase``, ``secret``, ``token``, ``key``, ``credential``: ``db_password``, ``api_key``,
   ``clientSecret``), any other text of at least ``MIN_NAMED_LENGTH`` (4) characters: it is the
   credential, however weak;
4. under any other field, only a text that looks random: at least ``MIN_LEAF_LENGTH`` (16)
   characters, no whitespace, not an ARN, a digit or an upper-case letter in it (so no plain word,
   host name, path or content type), and a Shannon estimate of at least ``MIN_BITS_PER_CHAR`` (3.0)
   bits per character (so at least 48 bits in all: no date, version or repeated pattern).

Booleans, numbers and null as JSON values are never leaves. The whole value is always fingerprinted:
its owner stored it as a secret. khoa-leaks applies the same rule when it matches (check.py), so leaf
fingerprints recorded before this rule (or by a backfill of an older version) that it rejects no
longer match.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac

KEY_BYTES = 32
# Leaves of a JSON secret that say where a database is or who logs in, not a credential: AWS's
# rotation templates' connection fields (never fingerprinted; other leaves as plausibly_secret says).
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
# Fields whose (normalised) name ends with one of these hold identifiers, names or public material,
# not credentials: their leaves are never fingerprinted (rule 1).
NOT_SECRET_SUFFIXES = (
    "id",
    "arn",
    "name",
    "user",
    "email",
    "region",
    "host",
    "endpoint",
    "publickey",
    "pubkey",
    "cert",
    "certificate",
)
# Fields whose (normalised) name ends with one of these hold a credential (rule 3).
SECRET_SUFFIXES = ("password", "passwd", "pwd", "passphrase", "secret", "token", "key", "credential")
# Texts that are a boolean or null however a configuration spells them (rule 2).
NOT_SECRET_WORDS = frozenset({"true", "false", "null", "none", "nil", "yes", "no", "on", "off"})
MIN_NAMED_LENGTH = 4
MIN_LEAF_LENGTH = 16
MIN_BITS_PER_CHAR = 3.0
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ACCESS_KEY_ID = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}")
_INDEX = re.compile(r"(\[\d+\])+$")
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
            if not plausibly_secret(field, leaf):
                continue
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


def _field_name(path: str) -> str:
    """The last key of a leaf's path (``db.password`` → ``password``, ``hosts[0]`` → ``hosts``),
    lower-cased, letters and digits only."""
    last = _INDEX.sub("", path).rsplit(".", 1)[-1]
    return "".join(ch for ch in last.lower() if ch.isalnum())


def _ends_with(name: str, suffixes: tuple[str, ...]) -> bool:
    singular = name[:-1] if name.endswith("s") else name
    return any(n.endswith(suffix) for n in (name, singular) if n for suffix in suffixes)


def bits_per_char(text: str) -> float:
    """The Shannon entropy of ``text``'s characters (bits per character)."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values()) if total else 0.0


def plausibly_secret(path: str, text: str) -> bool:
    """Whether the JSON leaf ``text`` under ``path`` could prove a secret compromised (the rule in
    this module's docstring); only such leaves are fingerprinted and matched."""
    name = _field_name(path)
    if name in NOT_SECRET_FIELDS or _ends_with(name, NOT_SECRET_SUFFIXES):
        return False
    stripped = text.strip()
    if stripped.lower() in NOT_SECRET_WORDS or _NUMBER.fullmatch(stripped):
        return False
    if _ACCESS_KEY_ID.fullmatch(stripped):
        return False
    if _ends_with(name, SECRET_SUFFIXES):
        return len(stripped) >= MIN_NAMED_LENGTH
    return (
        len(text) >= MIN_LEAF_LENGTH
        and not any(ch.isspace() for ch in text)
        and not text.startswith("arn:")
        and any(ch.isdigit() or ch.isupper() for ch in text)
        and bits_per_char(text) >= MIN_BITS_PER_CHAR
    )
