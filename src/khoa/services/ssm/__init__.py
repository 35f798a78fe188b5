"""AWS Systems Manager Parameter Store (``AmazonSSM``): hierarchical parameters and SecureStrings.

Only the parameter operations of SSM are served; other SSM operations answer UnknownOperationException.
"""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.ssm import authz, browse, labels, parameters, tags


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (parameters, browse, labels, tags):
        handlers.update(module.OPERATIONS)
    return Service(
        name="ssm",
        signing_name="ssm",
        target_prefix="AmazonSSM",
        model=ServiceModel("ssm"),
        handlers=handlers,
        authorizer=authz.authorize_request,
    )
