"""How Organizations' operations are authorised (run by the pipeline before the handler).

Every operation is evaluated as ``organizations:<Operation>`` on ``*`` against the caller's policies
(Organizations is a global service, like IAM: the caller's account, no Region). Which account may do
what (the management account manages; members may only describe their organization) is the
handlers' business, with AWS's errors.
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, same_check
from khoa.services.organizations.backend import OrganizationsBackend


def table(backend: OrganizationsBackend, operations: list[str]) -> AuthorizationTable:
    def check(ctx: RequestContext, params: dict[str, Any]) -> None:
        backend.authorizer.authorize(ctx, f"organizations:{ctx.operation}", "*")

    return AuthorizationTable("organizations", same_check("organizations", check, operations))
