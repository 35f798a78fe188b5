"""The console's way to Khoa: real botocore clients, signed with the signed-in principal's credentials,
whose requests go into this process's own request pipeline instead of onto the network.

So a page sees exactly what the principal may see through the API: the same SigV4 check, the same
authorisation (identity and resource policies, grants, SCPs, conditions on the browser's source
address and transport) and the same audit record, with the console's user agent. There is no second
permission model to drift from the first. Requests stay in the process: no loopback socket, no second
TLS handshake, and the address the trail records is the browser's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.session
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config

from khoa.client.leaks import add_models
from khoa.server.asgi import Response, Scope
from khoa.webconsole.sessions import SessionCredentials

# botocore signs for this host; the pipeline checks the signature over what it is given, so any name
# works, and this one can never be mistaken for a real endpoint.
_ENDPOINT = "http://console.khoa.internal"
# A page waits at most this long for one call (the pipeline's own database bound is much shorter).
CALL_TIMEOUT_SECONDS = 60.0
USER_AGENT = "khoa-console/1.0"

Handle = Callable[[Scope, bytes], Coroutine[Any, Any, Response]]


@dataclass(frozen=True)
class Origin:
    """Where the browser's request came from, carried into every API call made for it, so that
    conditions such as ``aws:SourceIp`` and ``aws:SecureTransport`` judge the browser's request."""

    client: tuple[str, int] | None
    scheme: str
    forwarded_for: bytes | None


class _Body:
    """The little of urllib3's response botocore reads: the whole body, once."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


class ConsoleApi:
    """Builds clients for one console request. Made per request; its clients must be used on a thread
    other than the event loop's (they wait for the loop to run each call)."""

    def __init__(
        self,
        core: botocore.session.Session,
        handle: Handle,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        credentials: SessionCredentials,
        region: str,
    ) -> None:
        self._session = boto3.Session(botocore_session=core)
        self._handle = handle
        self._loop = loop
        self._origin = origin
        self._credentials = credentials
        self.region = region
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client of ``service`` acting as this request's principal (default: its region)."""
        key = (service, region or self.region)
        if key not in self._clients:
            client = self._session.client(
                service,
                region_name=key[1],
                endpoint_url=_ENDPOINT,
                aws_access_key_id=self._credentials.access_key_id,
                aws_secret_access_key=self._credentials.secret_access_key,
                aws_session_token=self._credentials.session_token,
                config=Config(retries={"max_attempts": 1, "mode": "standard"}, user_agent=USER_AGENT),
            )
            client.meta.events.register("before-send", self._send)
            self._clients[key] = client
        return self._clients[key]

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        body = request.body
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = body.read()
        headers: list[tuple[bytes, bytes]] = []
        has_host = False
        for name, value in request.headers.items():
            raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
            lower = name.lower()
            has_host = has_host or lower == "host"
            headers.append((lower.encode("latin-1"), raw))
        if not has_host:
            headers.append((b"host", url.netloc.encode("latin-1")))
        if self._origin.forwarded_for is not None:
            headers.append((b"x-forwarded-for", self._origin.forwarded_for))
        raw_path = url.path or "/"
        scope: Scope = {
            "type": "http",
            "method": request.method,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": url.query.encode("latin-1"),
            "headers": headers,
            "client": self._origin.client,
            "scheme": self._origin.scheme,
        }
        future = asyncio.run_coroutine_threadsafe(self._handle(scope, payload), self._loop)
        response = future.result(timeout=CALL_TIMEOUT_SECONDS)
        response_headers = {"content-type": response.content_type.decode("latin-1")}
        for name, value in response.headers:
            response_headers[name.decode("latin-1")] = value.decode("latin-1")
        return AWSResponse(request.url, response.status, response_headers, _Body(response.body))


def new_core_session() -> botocore.session.Session:
    """The botocore session every console client of a process is made from (models load once)."""
    core = botocore.session.Session()
    add_models(core)
    return core
