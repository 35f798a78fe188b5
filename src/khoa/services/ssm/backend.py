"""What Parameter Store is given to work with: its collaborators, passed once to ``build_service``.

Parameter Store's handlers reach nothing else: the parameter store (every statement on its tables, and
the per-process caches in front of parameters and versions; handlers never see a connection), KMS for
SecureString values, the authoriser for ``ssm:`` actions, one way into Secrets Manager, the
GetSecretValue that ``/aws/reference/secretsmanager/...`` names read through, and the regions the
installation serves, which the public parameters (``/aws/service/global-infrastructure``) describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from khoa.access.authorize import Authorizer
from khoa.auth.regions import AWS_COMMERCIAL_REGIONS
from khoa.protocol.context import RequestContext
from khoa.services.kms.internal import InternalKms
from khoa.services.ssm.store import ParameterStore

SecretReader = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]
"""Secrets Manager's GetSecretValue as the caller may run it: given GetSecretValue's parameters
(``SecretId`` and optionally ``VersionId`` / ``VersionStage``), it authorises the caller for
``secretsmanager:GetSecretValue`` and returns GetSecretValue's result, or raises Secrets Manager's
AWSError. Parameter Store needs nothing more of Secrets Manager, so it depends on nothing more: the
public operation's contract rather than Secrets Manager's internals (see
:func:`khoa.services.ssm.references.reader`)."""


@dataclass(frozen=True)
class ParametersBackend:
    """Parameter Store's collaborators (one per process)."""

    store: ParameterStore
    kms: InternalKms
    authorizer: Authorizer
    read_secret: SecretReader
    # The regions served (KHOA_REGIONS), which the public parameters describe.
    regions: tuple[str, ...] = AWS_COMMERCIAL_REGIONS
