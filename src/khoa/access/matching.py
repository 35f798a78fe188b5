"""Wildcard matching (``*`` and ``?``) and policy variables, as IAM applies them.

Policy variables (``${aws:username}``, ``${aws:PrincipalTag/team}``) exist only in policies whose
``Version`` is ``2012-10-17``; in older or unversioned policies they are literal text. A variable takes
the single value of its key in the request context, or its default (``${aws:username, 'anonymous'}``);
a key that is absent (or multivalued, which IAM does not substitute) leaves the variable unresolved, and
an element holding an unresolved variable matches nothing: its value is effectively null (IAM User
Guide, "Policy variables with no value"). Matching nothing is not failing the statement: in
``NotResource`` such an entry excludes nothing, and a negated condition operator holds against it
(khoa.access.policy, khoa.access.conditions). ``${*}``, ``${?}`` and ``${$}`` stand for the
literal characters, and substituted values are literal too: neither acts as a wildcard.
"""

from __future__ import annotations

import functools
import re

_VARIABLE = re.compile(r"\$\{((?:[^}']|'[^']*')*)\}")  # a quoted default may hold "}"
_ESCAPES = {"*": "*", "?": "?", "$": "$"}
_DEFAULT = re.compile(r"^'(.*)'$", re.DOTALL)

# A pattern is a sequence of pieces: (text, literal). Policy text is a wildcard pattern; substituted values
# and the escapes ${*} ${?} ${$} are literal.
Pieces = tuple[tuple[str, bool], ...]


def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    return _compile(((pattern, False),), ignore_case)


@functools.lru_cache(maxsize=8192)
def _compile(pieces: Pieces, ignore_case: bool, *, arn: bool = False) -> re.Pattern[str]:
    """Pieces → compiled regex (see :func:`regex_source`)."""
    return re.compile(regex_source(pieces, arn=arn), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def regex_source(pieces: Pieces, *, arn: bool = False) -> str:
    """Pieces → regex text. With ``arn``, wildcards in the first five ARN components do not cross a colon.

    The regex runs in time linear in the value (times the pattern's length), however many wildcards
    the pattern holds: ``.*a.*a.*a.*b``, the naive translation, backtracks exponentially (a policy
    ``"*a*a*a*a*a*a*b"`` took 0.9 s against 60 characters, and hours against a few hundred, on the
    worker's event loop). Each ``*`` but the last of a component instead finds the earliest place
    the text up to the next ``*`` matches and never reconsiders it (``(?>.*?text)``, an atomic group):
    where any match exists the earliest one does too, as the next ``*`` absorbs whatever lies between.
    In an ARN the first five components hold no colon and are matched each on its own, so the same
    holds within each of them.
    """
    tokens: list[str | None] = []  # a character to match as such; None for "*"; "" for "?"
    for text, literal in pieces:
        for char in text:
            tokens.append(char if literal or char not in "*?" else None if char == "*" else "")
    components: list[list[str | None]] = [[]]
    for token in tokens:
        if arn and token == ":" and len(components) < 6:
            components.append([])
        else:
            components[-1].append(token)
    return ":".join(
        _component(component, "[^:]" if arn and n < 5 else ".") for n, component in enumerate(components)
    )


def _component(tokens: list[str | None], anything: str) -> str:
    """One wildcard component as a regex whose ``*`` and ``?`` match ``anything`` (one character)."""
    segments: list[str] = [""]
    for token in tokens:
        if token is None:
            segments.append("")
        else:
            segments[-1] += anything if token == "" else re.escape(token)
    if len(segments) == 1:
        return segments[0]
    first, *middle, last = segments
    return first + "".join(f"(?>{anything}*?{segment})" for segment in middle) + f"{anything}*{last}"


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Does ``value`` match ``pattern`` (``*`` any run of characters, ``?`` exactly one)?"""
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


def _resolve(inner: str, context: dict[str, list[str]]) -> str | None:
    inner = inner.strip()
    if inner in _ESCAPES:
        return _ESCAPES[inner]
    name, comma, default = inner.partition(",")
    values = context.get(name.strip().lower())
    if values is not None and len(values) == 1:
        return values[0]
    if comma:
        quoted = _DEFAULT.match(default.strip())
        if quoted:
            return quoted.group(1)
    return None


def pieces(text: str, context: dict[str, list[str]], *, variables: bool = True) -> Pieces | None:
    """Split ``text`` into pattern and literal pieces, substituting variables; None when one is unresolved."""
    if not variables or "${" not in text:
        return ((text, False),)
    result: list[tuple[str, bool]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        value = _resolve(match.group(1), context)
        if value is None:
            return None
        if match.start() > position:
            result.append((text[position : match.start()], False))
        result.append((value, True))
        position = match.end()
    if position < len(text):
        result.append((text[position:], False))
    return tuple(result)


def substitute(text: str, context: dict[str, list[str]], *, variables: bool = True) -> str | None:
    """Replace ``${key}`` policy variables with their values; None when a variable has no value."""
    parts = pieces(text, context, variables=variables)
    return None if parts is None else "".join(part for part, _ in parts)


def like(
    pattern: str,
    value: str,
    context: dict[str, list[str]],
    *,
    ignore_case: bool = False,
    variables: bool = True,
) -> bool:
    """Wildcard-match ``value`` against a policy pattern that may hold variables (unresolved: no match)."""
    if not variables or "${" not in pattern:
        return wildcard_match(pattern, value, ignore_case=ignore_case)
    parts = pieces(pattern, context)
    if parts is None:
        return False
    return _compile(parts, ignore_case).fullmatch(value) is not None


def arn_like(pattern: str, value: str, context: dict[str, list[str]], *, variables: bool = True) -> bool:
    """ArnLike / ArnEquals: each of the six colon-separated components is matched on its own."""
    parts = pieces(pattern, context, variables=variables)
    return parts is not None and match_pieces(parts, value, arn=True)


def match_pieces(parts: Pieces, value: str, *, ignore_case: bool = False, arn: bool = False) -> bool:
    """Match ``value`` against already-substituted pieces (see :func:`pieces`)."""
    if arn and (value.count(":") < 5 or sum(text.count(":") for text, _ in parts) < 5):
        return False
    return _compile(parts, ignore_case, arn=arn).fullmatch(value) is not None


def has_wildcard(parts: Pieces) -> bool:
    """Does the pattern hold a ``*`` or ``?`` that acts as a wildcard (not substituted, not escaped)?"""
    return any(not literal and ("*" in text or "?" in text) for text, literal in parts)


def lead(parts: Pieces) -> str:
    """The character every value the pattern matches starts with; "" when it starts with a wildcard
    (or is empty)."""
    for text, literal in parts:
        if text:
            return text[0] if literal or text[0] not in "*?" else ""
    return ""


def union(sources: tuple[str, ...]) -> re.Pattern[str]:
    """One regex that fullmatches what any of ``sources`` (from :func:`regex_source`) fullmatches.

    The alternation keeps the linear-time property: the engine tries each alternative once, from the
    start of the value, and gives it up for the next only after the alternative itself has failed;
    no quantifier encloses the alternation, so no alternative is ever tried again. The cost is that of
    matching each pattern on its own, summed, but within one call into the regex engine (which skips
    at once an alternative whose first character differs from the value's, and factors out a prefix
    that all alternatives share) instead of one Python call per pattern.
    """
    return re.compile("|".join(sources), re.DOTALL)
