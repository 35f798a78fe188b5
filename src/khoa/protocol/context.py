"""The per-request context handed to every operation handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from khoa.auth.principal import Principal


@dataclass
class RequestContext:
    """The facts of one request: who is calling, from where, when, in which region and account.

    Handlers receive this plus the validated parameters and know nothing about HTTP. It carries no
    collaborators: a handler's store, authoriser and other services are bound to it once by its
    service's ``build_service`` (see :func:`khoa.services.base.bind`).
    """

    principal: Principal
    region: str
    request_id: str
    service: str
    operation: str
    now: datetime
    source_ip: str = ""
    user_agent: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def account_id(self) -> str:
        return self.principal.account_id
