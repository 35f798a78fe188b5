"""AWS Systems Manager Parameter Store (``AmazonSSM``): hierarchical parameters and SecureStrings.

Only the parameter operations of SSM are served; other SSM operations answer UnknownOperationException.
"""

from __future__ import annotations

from khoa.access.authorize import Authorizer
from khoa.audit.events import is_read_only
from khoa.auth.regions import AWS_COMMERCIAL_REGIONS
from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind, clearing_caches
from khoa.services.kms.internal import InternalKms
from khoa.services.ssm import authtable, browse, labels, parameters, tags
from khoa.services.ssm.backend import ParametersBackend, SecretReader
from khoa.services.ssm.store import ParameterStore


def build_service(
    store: ParameterStore,
    kms: InternalKms,
    authorizer: Authorizer,
    read_secret: SecretReader,
    regions: tuple[str, ...] = AWS_COMMERCIAL_REGIONS,
) -> Service:
    """Parameter Store over its collaborators: the parameter store (shared with the expiry job and the
    runtime's cache clearing), KMS for SecureStrings, the authoriser, and Secrets Manager's
    GetSecretValue for reference names (:func:`khoa.services.ssm.references.reader` makes one from
    the Secrets Manager service), and the served regions for the public parameters. Writes clear
    the store's caches before and after they run."""
    ssm = ParametersBackend(
        store=store, kms=kms, authorizer=authorizer, read_secret=read_secret, regions=regions
    )
    handlers = bind(ssm, parameters.OPERATIONS, browse.OPERATIONS, labels.OPERATIONS, tags.OPERATIONS)
    return Service(
        name="ssm",
        signing_name="ssm",
        target_prefix="AmazonSSM",
        model=ServiceModel("ssm"),
        handlers=clearing_caches(handlers, store.invalidate_all, is_read_only),
        authorizer=authtable.table(ssm),
    )
