"""Asking Khoa which candidates are values it holds (``khoa-leaks`` CheckLeakedValues /
ReportLeakedValues), in batches of at most :data:`BATCH_SIZE`.

Only candidates travel, over the authenticated API; the answer names resources (ARN, version, key id,
status), never a value. Each call's candidates carry ids that are indexes into the batch, so nothing
about a value is echoed back either.

Every failure becomes a :class:`KhoaError` with one line a person can act on: no endpoint, no
credentials, credentials refused, the caller lacks ``khoa:CheckLeakedValues``, the server cannot be
reached, or it keeps throttling. None of them carries a candidate.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

BATCH_SIZE = 100  # the API's limit per call
MAX_THROTTLE_WAIT = 120.0  # seconds one call may spend waiting out throttling

_PERMISSION_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_CREDENTIAL_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
}
_THROTTLE_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException"}


class KhoaError(Exception):
    """Khoa could not be asked (exit code 2): ``message`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class Match:
    """A resource whose value (now or formerly) equals a candidate."""

    status: str  # "live" | "former"
    resource_type: str  # "secret" | "parameter" | "access-key" | "sts-credential"
    resource_arn: str
    access_key_id: str | None = None
    version_id: str | None = None
    version_stages: tuple[str, ...] = ()
    field: str | None = None
    invalid_since: str | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Match:
        since = data.get("InvalidSince")
        if isinstance(since, datetime):
            since = since.isoformat()
        return cls(
            status=str(data.get("Status", "live")),
            resource_type=str(data.get("ResourceType", "")),
            resource_arn=str(data.get("ResourceArn", "")),
            access_key_id=data.get("AccessKeyId"),
            version_id=data.get("VersionId"),
            version_stages=tuple(data.get("VersionStages") or ()),
            field=data.get("Field"),
            invalid_since=str(since) if since is not None else None,
        )


@dataclass
class LeakChecker:
    """Sends candidates to Khoa; counts the HTTP requests it made (``requests``, retries included) and
    keeps the responses of ReportLeakedValues (``responses``, with --respond).

    Khoa rate-limits these calls per principal (a token bucket); a throttled call is retried with
    backoff for up to :data:`MAX_THROTTLE_WAIT` seconds, so a large scan proceeds at the allowed rate.
    """

    client: Any
    respond: bool = False
    source_url: str = ""
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    calls: int = 0
    sent: int = 0
    throttled: int = 0
    responses: list[dict[str, Any]] = field(default_factory=list)
    _hooked: bool = False
    # Seconds between calls, learnt from throttling (0: as fast as answers come), so a long scan runs
    # at the bucket's rate instead of being refused every other call (refusals are audited and feed
    # the leak-check-burst alert).
    _pace: float = 0.0
    _last: float = float("-inf")

    def __post_init__(self) -> None:
        events = getattr(getattr(self.client, "meta", None), "events", None)
        if events is not None:
            events.register("before-send", self._count)
            self._hooked = True

    def _count(self, **_: Any) -> None:
        self.sent += 1

    @property
    def requests(self) -> int:
        """HTTP requests sent to Khoa (API calls, when the client is not a botocore client)."""
        return self.sent if self._hooked else self.calls

    def check(self, values: Sequence[str]) -> dict[int, list[Match]]:
        """Matches by index into ``values`` (only the indexes that match something)."""
        found: dict[int, list[Match]] = {}
        for start in range(0, len(values), BATCH_SIZE):
            batch = values[start : start + BATCH_SIZE]
            candidates = [{"Id": str(i), "Value": value} for i, value in enumerate(batch)]
            answer = self._call(candidates)
            for item in answer.get("Matches", []):
                try:
                    index = int(item["Id"])
                except (KeyError, TypeError, ValueError):
                    continue
                if 0 <= index < len(batch):
                    found.setdefault(start + index, []).append(Match.from_wire(item))
            self.responses.extend(answer.get("Responses", []) or [])
        return found

    def probe(self) -> None:
        """One call with a random value no one holds, so a scan that found no candidate still fails
        (exit 2) when Khoa cannot be reached or refuses the caller, rather than calling the tree clean
        unchecked. With --respond it asks ReportLeakedValues not to respond (nothing could match)."""
        candidate = [{"Id": "probe", "Value": "khoa-scan-probe-" + secrets.token_hex(16)}]
        if self.respond:
            self.calls += 1
            try:
                self.client.report_leaked_values(
                    Candidates=candidate, SourceUrl=self.source_url, Respond=False
                )
            except Exception as exc:  # noqa: BLE001 - mapped to the same one-line errors as a check
                self._raise_for(exc)
            return
        self._call(candidate)

    def _raise_for(self, exc: Exception) -> None:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            raise _client_error(exc, self.respond) from None
        raise KhoaError(f"cannot call Khoa: {type(exc).__name__}: {_safe(str(exc))}") from None

    def _call(self, candidates: list[dict[str, str]]) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        waited = 0.0
        delay = 0.5
        while True:
            if self._pace:
                wait = self._last + self._pace - self.clock()
                if wait > 0:
                    self.sleep(wait)
            self._last = self.clock()
            self.calls += 1
            try:
                if self.respond:
                    result: dict[str, Any] = self.client.report_leaked_values(
                        Candidates=candidates, SourceUrl=self.source_url, Respond=True
                    )
                else:
                    result = self.client.check_leaked_values(Candidates=candidates)
                self._pace = self._pace * 0.95 if self._pace > 0.05 else 0.0
                return result
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _THROTTLE_CODES and waited < MAX_THROTTLE_WAIT:
                    self.throttled += 1
                    self._pace = min(max(self._pace * 1.5, 0.25), 5.0)
                    self.sleep(delay)
                    waited += delay
                    delay = min(delay * 2, 5.0)
                    continue
                raise _client_error(exc, self.respond) from None
            except (NoCredentialsError, PartialCredentialsError):
                raise KhoaError(
                    "no credentials to call Khoa: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE or --profile"
                ) from None
            except EndpointConnectionError as exc:
                raise KhoaError(
                    f"cannot reach Khoa at {_endpoint(exc)}: check --endpoint-url (or AWS_ENDPOINT_URL) "
                    "and that the server is running"
                ) from None
            except BotoCoreError as exc:
                raise KhoaError(f"cannot call Khoa: {type(exc).__name__}: {_safe(str(exc))}") from None


def _endpoint(exc: Exception) -> str:
    return str(getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint"))


def _safe(text: str) -> str:
    return " ".join(text.split())[:300]


def _client_error(exc: Any, respond: bool) -> KhoaError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = _safe(str(error.get("Message", "")))
    action = "khoa:ReportLeakedValues" if respond else "khoa:CheckLeakedValues"
    if code in _PERMISSION_CODES:
        return KhoaError(
            f"not allowed to check values with Khoa ({code}): the caller needs an identity policy "
            f"granting {action}"
        )
    if code in _CREDENTIAL_CODES:
        return KhoaError(f"Khoa refused the credentials ({code}): check the access key and secret in use")
    if code in _THROTTLE_CODES:
        return KhoaError(f"Khoa kept throttling the checks ({code}): try again later")
    return KhoaError(f"Khoa answered {code}: {message or 'no message'}")


def resolve_endpoint(endpoint_url: str | None, profile: str | None) -> str:
    """``--endpoint-url``, else AWS_ENDPOINT_URL_KHOA_LEAKS / AWS_ENDPOINT_URL, else the profile's
    ``endpoint_url``. Never a public AWS endpoint: Khoa's API exists only where Khoa runs."""
    if endpoint_url:
        return endpoint_url
    for name in ("AWS_ENDPOINT_URL_KHOA_LEAKS", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    try:
        session = botocore.session.Session(profile=profile)
        configured = session.get_config_variable("endpoint_url")
    except ProfileNotFound:
        raise KhoaError(f"the profile {profile!r} does not exist (check --profile or AWS_PROFILE)") from None
    if configured:
        return str(configured)
    raise KhoaError("no Khoa endpoint: give --endpoint-url or set AWS_ENDPOINT_URL")


def make_client(endpoint_url: str | None, profile: str | None, region: str | None) -> Any:
    """A ``khoa-leaks`` client reaching Khoa as the aws CLI does (standard credential chain)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    from khoa.client.leaks import leaks_client

    endpoint = resolve_endpoint(endpoint_url, profile)
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise KhoaError(f"the profile {profile!r} does not exist (check --profile or AWS_PROFILE)") from None
    # No retries in botocore: LeakChecker waits out throttling itself (and counts it), and a dead
    # endpoint fails fast with one line.
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=120
    )
    try:
        return leaks_client(session, endpoint, session.region_name or "us-east-1", config)
    except ValueError as exc:
        raise KhoaError(f"cannot use the endpoint {endpoint!r}: {_safe(str(exc))}") from None
    except BotoCoreError as exc:
        raise KhoaError(f"cannot create the Khoa client: {_safe(str(exc))}") from None
