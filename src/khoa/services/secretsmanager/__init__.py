"""AWS Secrets Manager (``secretsmanager``): versioned secrets encrypted through Khoa's KMS.

Topic modules: ``secrets`` (a secret's life), ``versions`` (values and staging labels), ``listing``
(ListSecrets, BatchGetSecretValue), ``policies``, ``tags``, ``replication``, ``rotation``,
``password``; their handlers take the :class:`~khoa.services.secretsmanager.backend.SecretsBackend`
first, bound once here.
"""

from __future__ import annotations

from khoa.audit.events import is_read_only
from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind, clearing_caches
from khoa.services.secretsmanager import (
    authtable,
    listing,
    password,
    policies,
    publishing,
    replication,
    rotation,
    secrets,
    tags,
    versions,
)
from khoa.services.secretsmanager.backend import SecretsBackend

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


def build_service(sm: SecretsBackend) -> Service:
    """The service with every handler bound to ``sm``. Wrapping order, innermost first: replica
    refusal and mirroring, change events, then cache clearing around every write (see SecretStore)."""
    handlers = bind(
        sm,
        secrets.OPERATIONS,
        versions.OPERATIONS,
        listing.OPERATIONS,
        password.OPERATIONS,
        policies.OPERATIONS,
        replication.OPERATIONS,
        rotation.OPERATIONS,
        tags.OPERATIONS,
    )
    mirrored = replication.wrap_all(sm, handlers, _MIRRORED)
    return Service(
        name="secretsmanager",
        signing_name="secretsmanager",
        target_prefix="secretsmanager",
        model=ServiceModel("secretsmanager"),
        handlers=clearing_caches(publishing.wrap(sm, mirrored), sm.store.invalidate_all, is_read_only),
        authorizer=authtable.table(sm),
    )
