"""One declaration per ``KHOA_*`` environment variable, from which reading, writing and checking follow.

A settings dataclass declares each field with :func:`variable` (its variable's name, how to parse and
print it, which values it allows) or :func:`group` (a nested settings dataclass). :func:`read` builds
an instance from an environment, :func:`write` gives the environment that reproduces it (a worker
process reads its settings back from that), :func:`check` refuses values outside what is declared.
Before this, ``from_env`` and ``to_env`` were kept by hand as mirror images and drifted apart.

A leaf module: nothing here imports the rest of Khoa (``khoa.alerts.config`` relies on that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")
D = TypeVar("D")

_VARIABLE = "khoa.envconfig.variable"
_GROUP = "khoa.envconfig.group"

Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class Variable:
    """How one field maps to one environment variable."""

    name: str
    parse: Callable[[str], Any]
    dump: Callable[[Any], str]
    check: Check | None
    # True: an empty (or blank) value means "not set", the default applies; False: it is parsed.
    blank_is_default: bool


def variable(
    name: str,
    default: T,
    parse: Callable[[str], T],
    *,
    dump: Callable[[T], str] = str,
    check: Check | None = None,
    blank_is_default: bool = False,
) -> T:
    """A dataclass field read from (and written back to) the environment variable ``name``."""
    spec = Variable(name, parse, dump, check, blank_is_default)
    return field(default=default, metadata={_VARIABLE: spec})


def group(cls: Callable[[], T]) -> T:
    """A dataclass field holding another declared settings class (its variables are read alongside)."""
    return field(default_factory=cls, metadata={_GROUP: cls})


def variables(cls: type) -> list[Variable]:
    """Every variable ``cls`` declares, nested groups included, in declaration order."""
    out: list[Variable] = []
    for f in fields(cls):
        if _GROUP in f.metadata:
            out.extend(variables(f.metadata[_GROUP]))
        elif _VARIABLE in f.metadata:
            out.append(f.metadata[_VARIABLE])
    return out


def read(cls: Callable[..., D], env: Mapping[str, str]) -> D:
    """An unchecked instance of ``cls``: each declared variable set in ``env`` is parsed (parse errors
    raise ValueError), every other field keeps its default."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if _GROUP in f.metadata:
            values[f.name] = read(f.metadata[_GROUP], env)
            continue
        spec: Variable | None = f.metadata.get(_VARIABLE)
        if spec is None:
            continue
        raw = env.get(spec.name)
        if raw is None or (spec.blank_is_default and not raw.strip()):
            continue
        values[f.name] = spec.parse(raw)
    return cls(**values)


def write(settings: object) -> dict[str, str]:
    """The environment from which :func:`read` rebuilds ``settings`` (every declared variable)."""
    out: dict[str, str] = {}
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if _GROUP in f.metadata:
            out.update(write(value))
        elif _VARIABLE in f.metadata:
            spec: Variable = f.metadata[_VARIABLE]
            out[spec.name] = spec.dump(value)
    return out


def check(settings: object) -> None:
    """Run every field's declared check, in declaration order (raises ValueError naming the variable)."""
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if _GROUP in f.metadata:
            check(value)
        elif _VARIABLE in f.metadata:
            spec: Variable = f.metadata[_VARIABLE]
            if spec.check is not None:
                spec.check(spec.name, value)


# -- parsers, printers and checks shared by the settings classes -----------------------------------


def parse_bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def dump_bool(value: bool) -> str:
    return "1" if value else "0"


def one_of(*choices: str) -> Check:
    def check(name: str, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")

    return check


def more_than_at_most(low: float, high: float) -> Check:
    def check(name: str, value: float) -> None:
        if not low < value <= high:  # also refuses NaN
            raise ValueError(f"{name} must be more than {low} and at most {high}, not {value}")

    return check


def seconds_between(low: float, high: float) -> Check:
    def check(name: str, value: float) -> None:
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"{name} must be between {low} and {high} seconds, not {value}")

    return check
