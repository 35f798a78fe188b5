"""What CloudTrail's handler and authorisation table are given (by ``build_service``)."""

from __future__ import annotations

from dataclasses import dataclass

from khoa.access.authorize import Authorizer
from khoa.services.cloudtrail.store import TrailStore


@dataclass(frozen=True)
class CloudTrailBackend:
    """CloudTrail's collaborators: the audit trail it reads and the authoriser of LookupEvents."""

    store: TrailStore
    authorizer: Authorizer
