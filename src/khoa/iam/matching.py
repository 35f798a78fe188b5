"""Wildcard matching (``*`` and ``?``) and policy variables, as IAM applies them."""

from __future__ import annotations

import functools
import re

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_ESCAPES = {"*": "*", "?": "?", "$": "$"}


@functools.lru_cache(maxsize=8192)
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


def substitute(text: str, context: dict[str, list[str]]) -> str | None:
    """Replace ``${key}`` policy variables; None when a variable has no value (the element never matches).

    ``${key, 'default'}`` supplies a default; ``${*}``, ``${?}`` and ``${$}`` are literal characters.
    """
    if "${" not in text:
        return text
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        inner = match.group(1).strip()
        if inner in _ESCAPES:
            return _ESCAPES[inner]
        name, _, default = inner.partition(",")
        values = context.get(name.strip().lower())
        if values:
            return values[0]
        default = default.strip()
        if default.startswith("'") and default.endswith("'") and len(default) >= 2:
            return default[1:-1]
        missing = True
        return ""

    result = _VARIABLE.sub(replace, text)
    return None if missing else result
