"""What a service package provides: its botocore model, a dispatch table of plain handlers, and the
authorisation table that says how each of those operations is authorised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from khoa.protocol.awsquery import QueryDecoder, QueryEncoder
from khoa.protocol.context import RequestContext
from khoa.protocol.model import ServiceModel
from khoa.services.authorization import AuthorizationTable

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]


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
