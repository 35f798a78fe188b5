"""Publish change events for Secrets Manager writes, by comparing the secret before and after."""

from __future__ import annotations

from typing import Any

from khoa.changes.changes import publish_changes, snapshot
from khoa.protocol.context import RequestContext
from khoa.services.base import Handler
from khoa.services.secretsmanager import names
from khoa.services.secretsmanager.backend import SecretsBackend

TRACKED = (
    "CreateSecret",
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "DeleteSecret",
    "RestoreSecret",
)


def tracked(sm: SecretsBackend, handler: Handler) -> Handler:
    def wrapped(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        record = names.find(ctx, sm.store, params.get("SecretId") or params.get("Name") or "")
        since = ctx.now.timestamp()
        before = snapshot(sm.engine, record.secret_id, since) if record is not None else None
        result = handler(ctx, params)
        sm.store.invalidate_all()  # the lookup above may have cached "no such secret"
        if record is None:
            record = names.find(ctx, sm.store, params.get("Name") or "")
        if record is not None:
            publish_changes(sm.engine, before, snapshot(sm.engine, record.secret_id, since))
        return result

    return wrapped


def wrap(sm: SecretsBackend, handlers: dict[str, Handler]) -> dict[str, Handler]:
    return {name: (tracked(sm, h) if name in TRACKED else h) for name, h in handlers.items()}
