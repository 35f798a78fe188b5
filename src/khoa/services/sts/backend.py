"""What STS's handlers and authorisation table are given (by ``build_service``), and nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from khoa.access.authorize import Authorizer
from khoa.auth.credentials import CredentialStore
from khoa.services.sts.store import StsStore


@dataclass(frozen=True)
class StsBackend:
    """STS's collaborators: its ``store`` (roles, session policies, sessions), the ``credentials``
    GetAccessKeyInfo resolves, and the ``authorizer`` (whose ``allow_everything`` is development mode,
    where the account root may assume roles too)."""

    store: StsStore
    credentials: CredentialStore
    authorizer: Authorizer
