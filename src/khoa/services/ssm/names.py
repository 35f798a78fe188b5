"""Parameter names, hierarchy rules, ARNs and ``name:version`` / ``name:label`` selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from khoa.protocol.context import RequestContext
from khoa.services.ssm import errors

MAX_NAME_LENGTH = 1011
MAX_LEVELS = 15
_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parameter_arn(ctx: RequestContext, name: str) -> str:
    return f"arn:aws:ssm:{ctx.region}:{ctx.account_id}:parameter/{name.lstrip('/')}"


def from_arn(ctx: RequestContext, value: str) -> str:
    """Accept a parameter ARN where a name is expected; return the name."""
    prefix = f"arn:aws:ssm:{ctx.region}:{ctx.account_id}:parameter"
    if not value.startswith(prefix + "/"):
        raise errors.validation(f"Invalid parameter ARN: {value}")
    rest = value[len(prefix) :]
    return rest if rest.count("/") > 1 else rest[1:]


def parent_path(name: str) -> str:
    """The hierarchy a parameter sits in: "/a/b" for "/a/b/c", "/" for "/a", "" for a flat name."""
    if not name.startswith("/"):
        return ""
    parent = name.rsplit("/", 1)[0]
    return parent or "/"


def validate(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise errors.validation(f"Parameter name must be at most {MAX_NAME_LENGTH} characters.")
    lowered = name.lower().lstrip("/")
    if lowered.startswith("aws") or lowered.startswith("ssm"):
        raise errors.validation(errors.NAME_RULES)
    if "/" in name:
        if not name.startswith("/"):
            raise errors.validation("Parameter name must be a fully qualified name.")
        segments = name[1:].split("/")
        if len(segments) > MAX_LEVELS:
            raise errors.code(
                "HierarchyLevelLimitExceededException",
                f"Parameter name: {name} exceeds the maximum of {MAX_LEVELS} hierarchy levels.",
            )
    else:
        segments = [name]
    if any(not _SEGMENT.match(segment) for segment in segments):
        raise errors.validation(errors.NAME_RULES)


@dataclass(frozen=True)
class Selector:
    name: str
    version: int | None = None
    label: str | None = None
    raw: str | None = None


def parse_selector(ctx: RequestContext, value: str) -> Selector:
    """Split ``name:3`` or ``name:label``; a name may also be given as its ARN."""
    if value.startswith("arn:"):
        base, sep, suffix = value.rpartition(":")
        if sep and "parameter/" not in suffix and base.startswith("arn:aws:ssm:") and "parameter/" in base:
            return _selector(from_arn(ctx, base), suffix)
        return Selector(from_arn(ctx, value))
    name, sep, suffix = value.partition(":")
    if not sep:
        return Selector(name)
    return _selector(name, suffix)


def _selector(name: str, suffix: str) -> Selector:
    if suffix.isdigit():
        return Selector(name, version=int(suffix), raw=f":{suffix}")
    if not suffix:
        raise errors.validation(f"Invalid parameter selector: {name}:")
    return Selector(name, label=suffix, raw=f":{suffix}")
