"""Which strings of a line are worth asking Khoa about.

Generic detectors (detect-secrets) flag strings that *look* like secrets; a value Khoa holds may look
like nothing in particular (a passphrase, a short database password). So besides every string
detect-secrets flags, a line contributes each token that could be a value on its own: quoted strings
(JSON leaves included), the value after ``=`` or ``:``, the password of a URL's userinfo, a one-line
JSON object (a whole ``SecretString``), and every word of at least eight characters. The server is
asked about each *distinct* candidate once (see :mod:`khoa.scan.scanner`), so repeated tokens cost
nothing.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

MAX_LENGTH = 65536  # the API's limit for one candidate
MIN_QUOTED = 6  # a quoted or assigned value (shorter ones are identifiers, not credentials)
MIN_WORD = 8  # a bare word

_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)+)"|\'([^\'\n]+)\'|`([^`\n]+)`')
# The value after the first "=" or ":" (a key's value in env files, YAML, INI, shell, code).
_ASSIGNED = re.compile(r"^[^=:]*?[=:]\s*(\S.*)$")
# user:password@ in a URL's authority.
_USERINFO = re.compile(r"://[^:/@\s]*:([^@/\s]+)@")
# Words: runs without whitespace, quotes or brackets; "=" and ":" also split (KEY=value, key: value).
_WORD_SPLIT = re.compile(r"[\s\"'`,;(){}\[\]<>=:]+")
_EDGE = " \t\"'`,;"


def _add(found: set[str], value: str, minimum: int) -> None:
    value = value.strip()
    if minimum <= len(value) <= MAX_LENGTH:
        found.add(value)


def _unquote(value: str) -> str:
    value = value.strip().rstrip(",;").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1]
    return value


@lru_cache(maxsize=65536)
def tokens(line: str) -> frozenset[str]:
    """The candidate values of one line (without its line ending); cached, as code repeats lines."""
    return frozenset(_tokens(line))


def _tokens(line: str) -> set[str]:
    found: set[str] = set()
    text = line.strip()
    if not text:
        return found
    for match in _QUOTED.finditer(text):
        quoted = next(group for group in match.groups() if group is not None)
        _add(found, quoted, MIN_QUOTED)
        if "\\" in quoted and match.group(1) is not None:
            try:
                decoded = json.loads(f'"{quoted}"')
            except ValueError:
                continue
            if isinstance(decoded, str):
                _add(found, decoded, MIN_QUOTED)
    assigned = _ASSIGNED.match(text)
    if assigned:
        rest = assigned.group(1).strip()
        _add(found, _unquote(rest), MIN_QUOTED)
        first = rest.split()[0] if rest.split() else ""
        _add(found, _unquote(first).strip(_EDGE), MIN_QUOTED)
    for match in _USERINFO.finditer(text):
        _add(found, match.group(1), MIN_QUOTED)
    if text.startswith("{") and text.rstrip(",").endswith("}"):
        whole = text.rstrip(",")
        try:
            parsed = json.loads(whole)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            _add(found, whole, MIN_QUOTED)
    for word in _WORD_SPLIT.split(text):
        _add(found, word.strip(".!?"), MIN_WORD)
        _add(found, word, MIN_WORD)
    return found
