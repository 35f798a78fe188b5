"""What a service package provides: its botocore model, a dispatch table of plain handlers, and the
authorisation table that says how each of those operations is authorised."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from khoa.protocol.awsquery import QueryDecoder, QueryEncoder
from khoa.protocol.context import RequestContext
from khoa.protocol.model import ServiceModel
from khoa.services.authorization import AuthorizationTable

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]
"""What the pipeline calls: the request's facts and its validated parameters, nothing else."""

C = TypeVar("C")
Operation = Callable[[C, RequestContext, dict[str, Any]], dict[str, Any]]
"""How a topic module writes a handler: the service's collaborators first (bound once by
``build_service``), then the request. Keeping collaborators out of the request context means a
handler can reach only what its service was given, and a unit test can call it with a fake."""


def bind(collaborators: C, *tables: Mapping[str, Operation[C]]) -> dict[str, Handler]:
    """Turn topic modules' ``OPERATIONS`` tables into pipeline handlers bound to ``collaborators``."""
    handlers: dict[str, Handler] = {}
    for table in tables:
        for name, operation in table.items():
            if name in handlers:
                raise ValueError(f"operation {name} is defined twice")
            handlers[name] = partial(operation, collaborators)
    return handlers


def clearing_caches(
    handlers: Mapping[str, Handler], clear: Callable[[], None], is_read_only: Callable[[str], bool]
) -> dict[str, Handler]:
    """Wrap every write so it empties this process's read caches (``clear``) before and after it runs:
    before, so the write sees stored rows rather than cached ones; after, so this process's next read
    sees the write even when it raised half-way (a cache is never allowed to outlive a change)."""

    def wrap(handler: Handler) -> Handler:
        def clearing(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
            clear()
            try:
                return handler(ctx, params)
            finally:
                clear()

        return clearing

    return {name: (h if is_read_only(name) else wrap(h)) for name, h in handlers.items()}


@dataclass(frozen=True)
class Service:
    """A service reachable over awsJson1_1 or awsQuery (``protocol``).

    ``signing_name`` is the SigV4 credential-scope service; ``skew`` the clock skew AWS tolerates for it.
    ``authorizer`` runs after validation and before the handler and raises the service's AccessDenied
    error; it is required and must name exactly the operations in ``handlers`` (checked here), so no
    operation can be served without an authorisation step.
    """

    name: str
    signing_name: str
    target_prefix: str
    model: ServiceModel
    handlers: dict[str, Handler]
    authorizer: AuthorizationTable
    skew: timedelta = timedelta(minutes=5)
    protocol: str = "json"
    query_decoder: QueryDecoder = field(init=False)
    query_encoder: QueryEncoder = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.handlers) - set(self.model.operations)
        if unknown:
            raise ValueError(f"{self.name}: handlers for operations not in the model: {sorted(unknown)}")
        if not isinstance(self.authorizer, AuthorizationTable):
            raise TypeError(f"{self.name}: the authorizer must be an AuthorizationTable")
        self.authorizer.require_cover(self.handlers)
        object.__setattr__(self, "query_decoder", QueryDecoder(self.model))
        object.__setattr__(self, "query_encoder", QueryEncoder(self.model))
