"""AWS Systems Manager Parameter Store (``AmazonSSM``): hierarchical parameters and SecureStrings.

Only the parameter operations of SSM are served; other SSM operations answer UnknownOperationException.
"""

from __future__ import annotations

from typing import Any

from khoa.audit.events import is_read_only
from khoa.protocol.context import RequestContext
from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.ssm import authtable, browse, labels, parameters, tags


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (parameters, browse, labels, tags):
        handlers.update(module.OPERATIONS)
    return Service(
        name="ssm",
        signing_name="ssm",
        target_prefix="AmazonSSM",
        model=ServiceModel("ssm"),
        handlers={name: (h if is_read_only(name) else _clearing_caches(h)) for name, h in handlers.items()},
        authorizer=authtable.table(),
    )


def _clearing_caches(handler: Handler) -> Handler:
    """Writes clear this process's read caches before and after they run (see ParameterStore)."""

    def wrapped(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        ctx.runtime.parameters.store.invalidate_all()
        try:
            return handler(ctx, params)
        finally:
            ctx.runtime.parameters.store.invalidate_all()

    return wrapped
