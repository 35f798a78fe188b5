"""AWS Organizations (``AWSOrganizationsV20161128``): an organization of Khoa's accounts and its
service control policies, which ``access/`` applies to every principal of a member account
(organization.py: the organization, its accounts and root; policies.py: SCPs and their attachments).
How each operation is authorised is in authtable.py; all SQL is in store.py."""

from __future__ import annotations

from typing import Any

from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind
from khoa.services.organizations import authtable, organization, policies
from khoa.services.organizations.backend import OrganizationsBackend


class OrganizationsModel(ServiceModel):
    """Organizations answers bad input with InvalidInputException, not ValidationException."""

    def __init__(self) -> None:
        super().__init__("organizations")

    def validate(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(operation, params)
        except AWSError as error:
            if error.code != "ValidationException":
                raise
            raise AWSError("InvalidInputException", error.message) from None


def build_service(backend: OrganizationsBackend) -> Service:
    handlers = bind(backend, organization.OPERATIONS, policies.OPERATIONS)
    return Service(
        name="organizations",
        signing_name="organizations",
        target_prefix="AWSOrganizationsV20161128",
        model=OrganizationsModel(),
        handlers=handlers,
        authorizer=authtable.table(backend, sorted(handlers)),
    )
