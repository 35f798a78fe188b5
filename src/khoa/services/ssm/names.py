"""Parameter names, hierarchy rules, ARNs and ``name:version`` / ``name:label`` selectors.

The rules are AWS's: letters, digits and ``.-_`` in each segment; ``/`` separates hierarchy levels and a
hierarchical name starts with ``/``; at most 15 levels; the whole parameter ARN at most 1011 characters;
names beginning with ``aws`` are reserved (AccessDeniedException) and names beginning with ``ssm`` are
refused (ValidationException), case-insensitively, with or without the leading slash. Leading and trailing
spaces are removed, as AWS does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors

MAX_ARN_LENGTH = 1011
MAX_LEVELS = 15
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]+")


def clean(name: str) -> str:
    """AWS removes spaces at the beginning and end of a parameter name."""
    return name.strip(" ")


def hierarchy(path: str) -> str:
    """The hierarchy a GetParametersByPath ``Path`` names, the one it is both authorised on and lists
    (``browse`` and ``authz`` call this, so the two cannot drift apart): spaces at its ends removed, as
    from a name. ``" /Prod"`` lists ``/Prod``, so it is authorised as ``/Prod`` too. Whether it is a valid
    path is :func:`validate_path`'s question, asked after authorisation."""
    return clean(path)


def canonical(name: str) -> str:
    """The form a name is stored in: a one-level name without its leading slash ("/x" -> "x").

    The user guide says "/TestParam1" and "TestParam1" are the same parameter (names are not unique
    with and without the slash), and AWS's observed behaviour shows how it stores them: DescribeParameters
    and GetParametersByPath list such a parameter without the slash whichever form created it, while
    GetParameter echoes the form the caller asked for (Terraform's AWS provider relies on both; see
    hashicorp/terraform-provider-aws#49116 and #49339). Khoa follows the observed behaviour. A name of
    several levels keeps its slash: without one it is not a valid name at all."""
    if name.startswith("/") and name.count("/") == 1:
        return name[1:]
    return name


def parameter_arn(ctx: RequestContext, name: str) -> str:
    return f"arn:aws:ssm:{ctx.region}:{ctx.account_id}:parameter/{name.lstrip('/')}"


def arn_prefix(ctx: RequestContext) -> str:
    return f"arn:aws:ssm:{ctx.region}:{ctx.account_id}:parameter/"


def from_arn(ctx: RequestContext, value: str) -> str:
    """Accept a parameter ARN where a name is expected; return the name.

    The ARN of ``/a/b`` is ``...:parameter/a/b`` and that of ``flat`` is ``...:parameter/flat``; a one-level
    ARN path is read as the flat name (callers that find nothing try ``/flat`` too). An ARN of another
    account or region names a parameter this caller can't see: ParameterNotFound.
    """
    prefix = arn_prefix(ctx)
    if not value.startswith(prefix):
        raise errors.not_found()
    rest = value[len(prefix) :]
    return "/" + rest if "/" in rest else rest


def parent_path(name: str) -> str:
    """The hierarchy a parameter sits in: "/a/b" for "/a/b/c", "/" for "/a", "" for a flat name."""
    if not name.startswith("/"):
        return ""
    parent = name.rsplit("/", 1)[0]
    return parent or "/"


def reserved(name: str) -> bool:
    return name.lstrip("/").lower().startswith("aws")


def reserved_error(name: str) -> AWSError:
    return AWSError("AccessDeniedException", f"No access to reserved parameter name: {name}.")


def validate(ctx: RequestContext, name: str) -> None:
    """The checks PutParameter makes on a new parameter's name."""
    if reserved(name):
        raise reserved_error(name)
    if name.lstrip("/").lower().startswith("ssm"):
        raise errors.validation(errors.NAME_RULES)
    if "/" in name:
        if not name.startswith("/"):
            raise errors.validation(
                "Parameter name must be a fully qualified name. A hierarchical parameter name must "
                'begin with a forward slash "/".'
            )
        segments = name[1:].split("/")
    else:
        segments = [name]
    if any(not _SEGMENT.fullmatch(segment) for segment in segments):
        raise errors.validation(errors.NAME_RULES)
    if len(segments) > MAX_LEVELS:
        raise errors.code(
            "HierarchyLevelLimitExceededException",
            f"A hierarchy can have a maximum of {MAX_LEVELS} levels. For more information, see "
            "Requirements and constraints for parameter names in the AWS Systems Manager User Guide.",
        )
    arn = parameter_arn(ctx, name)
    if len(arn) > MAX_ARN_LENGTH:
        raise errors.validation(
            f"Parameter name: {name} is too long. The maximum length for a parameter name, including "
            f"the full length of the parameter ARN ({len(arn)} characters here), is {MAX_ARN_LENGTH} "
            "characters."
        )


def validate_path(path: str) -> None:
    """The checks on a hierarchy path (GetParametersByPath's Path, the Path filter)."""
    if not path.startswith("/") or "//" in path or not re.fullmatch(r"[A-Za-z0-9_.\-/]*", path):
        raise errors.validation(errors.PATH_RULES)
    if len(path.strip("/").split("/")) > MAX_LEVELS:
        raise errors.code(
            "HierarchyLevelLimitExceededException",
            f"A hierarchy can have a maximum of {MAX_LEVELS} levels. For more information, see "
            "Requirements and constraints for parameter names in the AWS Systems Manager User Guide.",
        )


@dataclass(frozen=True)
class Selector:
    name: str
    version: int | None = None
    label: str | None = None
    raw: str | None = None
    by_arn: bool = False

    def alternative(self) -> str | None:
        """For a one-level name, the other form it may be stored in: parameters created before names were
        stored in their canonical form (see :func:`canonical`) may hold ``/x``."""
        if "/" not in canonical(self.name):
            return "/" + canonical(self.name)
        return None


def parse_selector(ctx: RequestContext, value: str) -> Selector:
    """Split ``name:3`` or ``name:label``; a name may also be given as its ARN."""
    value = clean(value)
    if value.startswith("arn:"):
        prefix = arn_prefix(ctx)
        if not value.startswith(prefix):
            raise errors.not_found()
        rest = value[len(prefix) :]
        name_part, sep, suffix = rest.partition(":")
        name = from_arn(ctx, prefix + name_part)
        if not sep:
            return Selector(name, by_arn=True)
        return _selector(name, suffix, by_arn=True)
    name, sep, suffix = value.partition(":")
    if not sep:
        return Selector(name)
    return _selector(name, suffix)


def _selector(name: str, suffix: str, *, by_arn: bool = False) -> Selector:
    if suffix.isdigit():
        return Selector(name, version=int(suffix), raw=f":{suffix}", by_arn=by_arn)
    if not suffix or ":" in suffix:
        raise errors.validation(
            f"Invalid parameter name. Please ensure that the parameter name, version or label "
            f"is valid: {name}:{suffix}"
        )
    return Selector(name, label=suffix, raw=f":{suffix}", by_arn=by_arn)
