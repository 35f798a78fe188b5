"""AllowedPattern: a caller's regular expression, compiled and matched within bounds.

The pattern is the caller's, and both steps run on the worker's event loop, so neither may take
unbounded time or memory:

- compiling: the ``regex`` library expands counted repeats of fixed text as it compiles, so a
  33-character ``(?:(?:(?:a{1000}){1000}){1000})`` would build gigabytes. The pattern is first parsed by
  the standard library (which does not expand) and refused when its repeats multiply past
  :data:`MAX_EXPANSION`; a pattern only ``regex`` understands (``\\p{L}``) is accepted only without
  counted repeats;
- matching: backtracking patterns (``(a+)+$``) can take exponential time, so a match has a deadline
  and a value that cannot be validated in time is refused.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # the standard library's parse tree: stable since 3.11
import re._parser as sre_parser
from typing import Any

import regex

from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors

MATCH_SECONDS = 0.05
# Units of compiled program a pattern may expand to (fixed repeats multiply their body). A whole
# value of the largest tier written out ("^.{8192}$") stays well below it.
MAX_EXPANSION = 20_000
_COUNTED_REPEAT = re.compile(r"\{\s*\d")
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def _expansion(items: Any) -> int:
    """How large ``items`` (a standard-library parse tree) grows when fixed repeats are written out."""
    total = 0
    for op, arg in items:
        if op in _REPEATS:
            low, _, body = arg
            total += max(low, 1) * _expansion(body)
        elif op is sre_constants.SUBPATTERN:
            total += _expansion(arg[-1])
        elif op is sre_constants.BRANCH:
            total += sum(_expansion(branch) for branch in arg[1])
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            total += _expansion(arg[1])
        elif op is sre_constants.GROUPREF_EXISTS:
            total += sum(_expansion(branch) for branch in arg[1:] if branch is not None)
        else:
            total += 1
        if total > MAX_EXPANSION:
            return total
    return total


def _invalid(pattern: str) -> AWSError:
    return errors.code(
        "InvalidAllowedPatternException",
        f"The allowed pattern {pattern} is not a valid regular expression.",
    )


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """``pattern`` compiled, or InvalidAllowedPatternException (invalid, or too large once expanded)."""
    try:
        tree = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        tree = None
        if _COUNTED_REPEAT.search(pattern):
            raise _invalid(pattern) from None
    if tree is not None and _expansion(tree) > MAX_EXPANSION:
        raise _invalid(pattern)
    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError):
        raise _invalid(pattern) from None


def check_value(pattern: str, value: str) -> None:
    """Refuse ``value`` unless the whole of it matches ``pattern`` within :data:`MATCH_SECONDS`."""
    compiled = compile_pattern(pattern)
    try:
        matched = compiled.fullmatch(value, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        matched = False
    if not matched:
        raise errors.code(
            "ParameterPatternMismatchException",
            f"Parameter value, cannot be validated against allowedPattern: {pattern}",
        )
