"""What IAM's handlers and authorisation table are given (by ``build_service``), and nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from khoa.access.authorize import Authorizer
from khoa.auth.credentials import CredentialStore
from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter
from khoa.services.iam.store import IamStore


@dataclass(frozen=True)
class IamBackend:
    """IAM's collaborators.

    ``store`` is all of IAM's storage; ``barrier`` seals new access keys' secrets; ``authorizer``
    authorises every call (and its directory caches callers' policies); ``credentials`` caches access
    keys. The last two are caches of what IAM writes, emptied around every IAM write
    (:meth:`forget_cached_access`) so this process sees the change at once.
    """

    store: IamStore
    barrier: Barrier
    authorizer: Authorizer
    credentials: CredentialStore
    # Fingerprints new access keys for leak detection (khoa-leaks); None: no fingerprints.
    fingerprinter: Fingerprinter | None = None

    def forget_cached_access(self) -> None:
        """Drop this process's cached policies and credentials after a change to either."""
        self.authorizer.clear()
        self.credentials.clear()
