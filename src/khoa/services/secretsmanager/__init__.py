"""AWS Secrets Manager (``secretsmanager``): versioned secrets encrypted through Khoa's KMS."""

from __future__ import annotations

from typing import Any

from khoa.audit.events import is_read_only
from khoa.protocol.context import RequestContext
from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.secretsmanager import (
    authtable,
    listing,
    operations,
    password,
    policies,
    publishing,
    replication,
    rotation,
    tagging,
)

# Writes that must be refused on replicas and mirrored to them afterwards.
_MIRRORED = (
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "TagResource",
    "UntagResource",
    "RotateSecret",
    "CancelRotateSecret",
    "RestoreSecret",
    "PutResourcePolicy",
    "DeleteResourcePolicy",
)


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (operations, listing, password, policies, replication, rotation, tagging):
        handlers.update(module.OPERATIONS)
    return Service(
        name="secretsmanager",
        signing_name="secretsmanager",
        target_prefix="secretsmanager",
        model=ServiceModel("secretsmanager"),
        handlers=_clearing_caches(publishing.wrap(replication.wrap_all(handlers, _MIRRORED))),
        authorizer=authtable.table(),
    )


def _clearing_caches(handlers: dict[str, Handler]) -> dict[str, Handler]:
    """Writes clear this process's read caches before and after they run (see SecretStore)."""

    def wrap(handler: Handler) -> Handler:
        def wrapped(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
            ctx.runtime.secrets.store.invalidate_all()
            try:
                return handler(ctx, params)
            finally:
                ctx.runtime.secrets.store.invalidate_all()

        return wrapped

    return {name: (h if is_read_only(name) else wrap(h)) for name, h in handlers.items()}
