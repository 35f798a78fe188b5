"""The per-request context handed to every operation handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from khoa.auth.principal import Principal
    from khoa.runtime import Runtime


@dataclass
class RequestContext:
    """Who is calling, where, and with which runtime services.

    Handlers receive this plus the validated parameters and know nothing about HTTP.
    """

    runtime: Runtime
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
