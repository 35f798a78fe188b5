"""AWS KMS (``TrentService``): keys, aliases, envelope encryption, signing, MACs, grants, BYOK."""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind
from khoa.services.kms import (
    aliases,
    authtable,
    cryptoops,
    custom_key_stores,
    grants,
    imports,
    key_rotation,
    keys,
    tags,
    unsupported,
    usage,
)
from khoa.services.kms.backend import KmsBackend


def build_service(kms: KmsBackend) -> Service:
    """KMS over its collaborators: every handler and the authorisation table are bound to ``kms``.

    No cache-clearing wrapper: the key store invalidates exactly the rows and aliases each write
    changes, and material versions never change once written.
    """
    handlers = bind(
        kms,
        keys.OPERATIONS,
        aliases.OPERATIONS,
        cryptoops.OPERATIONS,
        custom_key_stores.OPERATIONS,
        grants.OPERATIONS,
        imports.OPERATIONS,
        key_rotation.OPERATIONS,
        tags.OPERATIONS,
        unsupported.OPERATIONS,
        usage.OPERATIONS,
    )
    model = ServiceModel("kms")
    custom_key_stores.relax_model(model)
    return Service(
        name="kms",
        signing_name="kms",
        target_prefix="TrentService",
        model=model,
        handlers=handlers,
        authorizer=authtable.table(kms),
    )
