"""What Organizations' handlers and authorisation table are given (by ``build_service``)."""

from __future__ import annotations

from dataclasses import dataclass

from khoa.access.authorize import Authorizer
from khoa.services.organizations.store import OrganizationStore


@dataclass(frozen=True)
class OrganizationsBackend:
    """Organizations' collaborators: its store and the authoriser of every operation."""

    store: OrganizationStore
    authorizer: Authorizer
