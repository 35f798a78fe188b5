"""AWS KMS (``TrentService``): keys, aliases, envelope encryption, signing, MACs, grants, BYOK."""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.kms import (
    aliases,
    authtable,
    cryptoops,
    grants,
    imports,
    keys,
    rotation,
    tags,
    unsupported,
    usage,
)


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (keys, aliases, cryptoops, grants, imports, rotation, tags, unsupported, usage):
        handlers.update(module.OPERATIONS)
    return Service(
        name="kms",
        signing_name="kms",
        target_prefix="TrentService",
        model=ServiceModel("kms"),
        handlers=handlers,
        authorizer=authtable.table(),
    )
