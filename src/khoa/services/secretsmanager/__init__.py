"""AWS Secrets Manager (``secretsmanager``): versioned secrets encrypted through Khoa's KMS."""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.secretsmanager import (
    authz,
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
        handlers=publishing.wrap(replication.wrap_all(handlers, _MIRRORED)),
        authorizer=authz.authorize_request,
    )
