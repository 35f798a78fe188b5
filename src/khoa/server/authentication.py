"""Who is calling: SigV4 verification, session tokens, and the region and service a request is scoped to.

Runs before anything else of a request is trusted. In development mode (``--dev``, loopback only)
every request is the first account's root, in the region its credential scope names (which must still
be one ``KHOA_REGIONS`` serves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from khoa.auth.credentials import Credential, CredentialStore, check_session_token
from khoa.auth.principal import Principal
from khoa.auth.sigv4 import SignedRequest, SigV4Verifier, credential_scope, invalid_region, query_auth
from khoa.clock import Clock, wall_clock
from khoa.observe.metrics import Metrics
from khoa.protocol.errors import AWSError
from khoa.server.asgi import Scope
from khoa.services.base import Service


def scope_parts(headers: dict[str, list[str]], query_string: str = "") -> list[str]:
    """The credential scope of the Authorization header, or of a presigned URL's ``X-Amz-Credential``
    when there is no header: key id, date, region, service, terminator."""
    header = (headers.get("authorization") or [""])[0]
    if header:
        return credential_scope(header)
    try:
        presigned = query_auth(query_string)
    except AWSError:
        return []  # refused by verification, in the protocol of the service the rest addresses
    return credential_scope(presigned.authorization) if presigned is not None else []


def scope_service(headers: dict[str, list[str]], query_string: str = "") -> str | None:
    parts = scope_parts(headers, query_string)
    return parts[3] if len(parts) == 5 else None


class Authenticator:
    def __init__(
        self,
        *,
        verifier: SigV4Verifier,
        credentials: CredentialStore,
        clock: Clock,
        metrics: Metrics,
        check_revocations: Callable[[], None],
        dev_account: str | None,
        default_region: str,
    ) -> None:
        """``dev_account`` is the account every request acts as in development mode, None otherwise."""
        self.verifier = verifier
        self.credentials = credentials
        self.clock = clock
        self.metrics = metrics
        self.check_revocations = check_revocations
        self.dev_account = dev_account
        self.default_region = default_region

    def authenticate(
        self, scope: Scope, headers: dict[str, list[str]], body: bytes, service: Service
    ) -> tuple[Principal, str]:
        """The verified caller and the region of its credential scope; raises AWS's auth errors."""
        self.check_revocations()  # before any credential, policy or metadata is read from a cache
        if self.dev_account is not None:
            region = self.scope_region(headers, scope.get("query_string", b"").decode("latin-1"))
            if region not in self.verifier.regions:  # --dev serves the same regions (KHOA_REGIONS)
                self.metrics.auth_failures.labels("InvalidSignatureException").inc()
                raise invalid_region(region)
            return Principal.account_root(self.dev_account), region
        request = SignedRequest(
            method=scope["method"],
            raw_path=scope.get("raw_path", b"/").decode("latin-1").partition("?")[0] or scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
        found: dict[str, Any] = {}

        def lookup(access_key_id: str) -> str | None:
            credential = self.credentials.lookup(access_key_id)
            if credential is None:
                return None
            found["value"] = credential
            return credential.secret

        try:
            verified = self.verifier.verify(
                request,
                service=service.signing_name,
                now=wall_clock(),
                skew=service.skew,
                lookup_secret=lookup,
            )
        except AWSError as error:
            self.metrics.auth_failures.labels(error.code).inc()
            raise
        credential: Credential = found["value"]
        # Sessions expire by the clock that issued them (the domain clock). It is never behind the wall
        # clock (it only moves forward, and only in --dev or a test harness), so advancing it can end
        # sessions early, never extend them.
        try:
            check_session_token(credential, verified.session_token, self.clock.now().timestamp())
        except AWSError as error:
            self.metrics.auth_failures.labels(error.code).inc()
            raise
        return credential.principal, verified.region

    def owner_of(self, access_key_id: str) -> str | None:
        """The account whose access key ``access_key_id`` is, for the record of a call refused before
        (or while) its signature was verified: the refusal belongs in that account's trail. None when
        the key is not one of this installation's (or cannot be looked up now)."""
        if not access_key_id or self.dev_account is not None:
            return None
        try:
            credential = self.credentials.lookup(access_key_id)
        except Exception:  # noqa: BLE001 - the refusal stands; only where it is recorded is unknown
            return None
        return None if credential is None else credential.principal.account_id

    def still_valid(self, principal: Principal, token: str | None) -> Principal | None:
        """The principal of an open subscription's credential if it still works (present, active, a
        session unexpired), else None. Raises AWS's auth errors for a session that ended."""
        if self.dev_account is not None:
            return principal
        credential = self.credentials.lookup(principal.access_key_id)
        if credential is None:
            return None
        check_session_token(credential, token, self.clock.now().timestamp())
        return credential.principal

    def scope_region(self, headers: dict[str, list[str]], query_string: str = "") -> str:
        parts = scope_parts(headers, query_string)
        if len(parts) == 5 and parts[2]:
            return parts[2]
        return self.default_region
