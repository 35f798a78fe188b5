"""Authorisation tables: how every operation of every service is authorised, before its handler runs.

Each service declares one :class:`AuthorizationTable` mapping every operation it serves to a
:class:`Rule`: the IAM action(s) the operation is evaluated as and the check that evaluates them (or,
for the rare operation AWS documents as needing no permission, an explicit :func:`exempt` entry that
says why). The request pipeline runs the table's rule for the operation after validation and before
the handler (``KhoaApp._prepare``), so handlers contain no authorisation of their own.

Why a table rather than calls inside handlers: a service cannot be built unless its table names
exactly the operations it has handlers for (:meth:`AuthorizationTable.require_cover`, called by
``Service.__post_init__``), so an operation without an authorisation step cannot exist, and a table
entry for an operation that no longer exists is an error too. At run time an operation the table does
not know is refused (fail closed), although coverage makes that unreachable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError

Check = Callable[[RequestContext, dict[str, Any]], Any]


@dataclass(frozen=True)
class Rule:
    """How one operation is authorised.

    ``actions`` are the IAM actions the operation is evaluated as (what a policy must allow);
    ``check`` evaluates them for a request and raises the service's AccessDenied error when they are
    not allowed. ``exemption`` is set (and ``check`` is None) only for operations AWS documents as
    requiring no permission; it says why, so the exception is visible where the rules are.
    """

    actions: tuple[str, ...]
    check: Check | None
    exemption: str = ""

    def __post_init__(self) -> None:
        if self.check is None and not self.exemption:
            raise ValueError("a rule without a check must say why (exempt(reason))")
        if self.check is not None and self.exemption:
            raise ValueError("a rule cannot both check and be exempt")
        if self.check is not None and not self.actions:
            raise ValueError("a rule that checks must name the action(s) it authorises")


def rule(check: Check, *actions: str) -> Rule:
    """An operation authorised by ``check`` as ``actions``."""
    return Rule(tuple(actions), check)


def exempt(reason: str) -> Rule:
    """An operation AWS documents as needing no permission (GetCallerIdentity is the one today)."""
    return Rule((), None, reason)


def same_check(
    prefix: str, check: Check, operations: Iterable[str], **actions: tuple[str, ...]
) -> dict[str, Rule]:
    """Rules for ``operations`` all authorised by one service-wide ``check`` as ``<prefix>:<Operation>``
    (``actions`` overrides that for operations evaluated as other actions, e.g. KMS ReEncrypt)."""
    return {op: Rule(actions.get(op, (f"{prefix}:{op}",)), check) for op in operations}


class AuthorizationTable:
    """Every operation of one service and its :class:`Rule`. Calling the table authorises a request."""

    def __init__(self, service: str, rules: Mapping[str, Rule]) -> None:
        self.service = service
        self.rules: dict[str, Rule] = dict(rules)

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self.rules)

    @property
    def exemptions(self) -> dict[str, str]:
        """Operations that need no permission, with the documented reason."""
        return {op: r.exemption for op, r in self.rules.items() if r.check is None}

    def require_cover(self, handlers: Iterable[str]) -> None:
        """Refuse (ValueError) unless the table names exactly the operations that have handlers."""
        handled = set(handlers)
        missing = sorted(handled - self.operations)
        extra = sorted(self.operations - handled)
        if missing or extra:
            raise ValueError(
                f"{self.service}: the authorisation table must cover exactly the handlers; "
                f"operations without a rule: {missing}; rules without an operation: {extra}"
            )

    def __call__(self, ctx: RequestContext, params: dict[str, Any]) -> None:
        found = self.rules.get(ctx.operation)
        if found is None:
            # Unreachable once require_cover has run; refuse rather than let an unlisted call through.
            raise AWSError(
                "AccessDenied" if ctx.service in ("iam", "sts") else "AccessDeniedException",
                f"User: {ctx.principal.arn} is not authorized to perform: {self.service}:{ctx.operation}",
                403 if ctx.service in ("iam", "sts") else 400,
            )
        if found.check is not None:
            found.check(ctx, params)
