"""SigV4 verification of XKS requests, with Khoa's verifier (:mod:`khoa.auth.sigv4`).

The spec's profile of SigV4: service ``kms-xks-proxy``, any Region (the one named in the credential
scope, where the caller runs), ``host`` and ``x-amz-date`` signed, the body's SHA-256 in the canonical
request, a timestamp within five minutes. The secret is looked up by access key id, so several
credentials can be accepted at once (rotation, as the spec recommends). Every failure is the spec's
401 ``AuthenticationFailedException``; the reason is logged, not returned, beyond a short hint.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from khoa.auth.sigv4 import SignedRequest, SigV4Verifier, parse_authorization
from khoa.protocol.errors import AWSError
from khoa.xks_proxy.errors import XksError

SERVICE = "kms-xks-proxy"
MAX_SKEW = timedelta(minutes=5)
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)


class _AnyRegion(frozenset[str]):
    """Every well-formed Region name: the caller's Region is whatever its credential scope says."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and _REGION.fullmatch(item) is not None


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    region: str


class RequestAuthenticator:
    """Verifies the SigV4 signature of a request against the configured credentials."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        if not credentials:
            raise ValueError("at least one access key id and secret access key are needed")
        self._credentials = dict(credentials)
        self._verifier = SigV4Verifier()
        self._verifier.regions = _AnyRegion()

    def _secret(self, access_key_id: str) -> str | None:
        # Compare every configured id in constant time rather than a dict lookup keyed by input.
        found = None
        for known, secret in self._credentials.items():
            if hmac.compare_digest(known.encode(), access_key_id.encode()):
                found = secret
        return found

    def authenticate(self, request: SignedRequest, now: datetime | None = None) -> Caller:
        header = request.headers.get("authorization")
        if not header:
            raise XksError("AuthenticationFailedException", "The request is not signed (SigV4).")
        _, parts = parse_authorization(header[0])
        signed = parts.get("SignedHeaders", "").split(";")
        if "x-amz-date" not in signed:
            raise XksError("AuthenticationFailedException", "x-amz-date must be a signed header.")
        try:
            verified = self._verifier.verify(
                request,
                service=SERVICE,
                now=now or datetime.now(UTC),
                skew=MAX_SKEW,
                lookup_secret=self._secret,
            )
        except AWSError as exc:
            raise XksError("AuthenticationFailedException", _hint(exc)) from None
        return Caller(access_key_id=verified.access_key_id, region=verified.region)


def _hint(exc: AWSError) -> str:
    if exc.code == "UnrecognizedClientException":
        return "The access key id is not known to this proxy."
    if "Signature expired" in (exc.message or "") or "not yet current" in (exc.message or ""):
        return "The request time is more than 5 minutes from the proxy's clock."
    if "service" in (exc.message or ""):
        return f"The credential scope must name the service '{SERVICE}'."
    return "The SigV4 signature does not match."
