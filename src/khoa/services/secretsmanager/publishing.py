"""Publish change events for Secrets Manager writes, by comparing the secret before and after."""

from __future__ import annotations

from typing import Any

from khoa.events.changes import publish_changes, snapshot
from khoa.protocol.context import RequestContext
from khoa.services.base import Handler
from khoa.services.secretsmanager import names

TRACKED = (
    "CreateSecret",
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "DeleteSecret",
    "RestoreSecret",
)


def tracked(handler: Handler) -> Handler:
    def wrapped(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        store = ctx.runtime.secrets.store
        engine = ctx.runtime.secrets.engine
        record = names.find(ctx, store, params.get("SecretId") or params.get("Name") or "")
        before = snapshot(engine, record.secret_id) if record is not None else None
        result = handler(ctx, params)
        store.invalidate_all()  # the lookup above may have cached "no such secret"
        if record is None:
            record = names.find(ctx, store, params.get("Name") or "")
        if record is not None:
            publish_changes(engine, before, snapshot(engine, record.secret_id))
        return result

    return wrapped


def wrap(handlers: dict[str, Handler]) -> dict[str, Handler]:
    return {name: (tracked(h) if name in TRACKED else h) for name, h in handlers.items()}
