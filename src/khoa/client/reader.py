"""Cached secret reads (aws-secretsmanager-caching) with change-stream invalidation."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from typing import Any
from urllib.parse import quote

from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

log = logging.getLogger("khoa.client")


class SecretReader:
    """Reads secrets through aws-secretsmanager-caching's SecretCache.

    With ``watch=True`` each secret read is also subscribed to Khoa's change stream
    (``GET /_khoa/events``), and the cached value is refreshed as soon as AWSCURRENT moves.
    """

    def __init__(self, client: Any, *, config: SecretCacheConfig | None = None, watch: bool = False) -> None:
        self.client = client
        self.cache = SecretCache(config=config or SecretCacheConfig(), client=client)
        self.watch = watch
        self._watched: dict[str, threading.Thread] = {}
        self._responses: dict[str, Any] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------------
    def get_secret_string(self, secret_id: str) -> str:
        self._subscribe(secret_id)
        value: str = self.cache.get_secret_string(secret_id)
        return value

    def get_json(self, secret_id: str) -> dict[str, Any]:
        data = json.loads(self.get_secret_string(secret_id))
        if not isinstance(data, dict):
            raise ValueError(f"secret {secret_id} is not a JSON object")
        return data

    def get_pending_json(self, secret_id: str) -> dict[str, Any] | None:
        """The AWSPENDING version during a rotation window, read directly (never cached)."""
        try:
            value = self.client.get_secret_value(SecretId=secret_id, VersionStage="AWSPENDING")[
                "SecretString"
            ]
        except self.client.exceptions.ResourceNotFoundException:
            return None
        data = json.loads(value)
        return data if isinstance(data, dict) else None

    def refresh(self, secret_id: str) -> None:
        """Fetch AWSCURRENT again now (after an authentication failure, or when it moved)."""
        self.cache.refresh_secret_now(secret_id)

    def invalidate(self, secret_id: str) -> None:
        """Make the next read fetch AWSCURRENT again, without waiting.

        SecretCache's refresh_secret_now sleeps a random 2.5-5 s jitter (it protects AWS from
        thundering herds after failures); when Khoa says AWSCURRENT moved, marking the cached item
        stale is enough: the next read refreshes it synchronously.
        """
        item = self.cache._get_cached_secret(secret_id)
        if hasattr(item, "_refresh_needed") and hasattr(item, "_lock"):
            with item._lock:
                item._refresh_needed = True
        else:  # a future cache version without these internals: fall back to the public call
            self.cache.refresh_secret_now(secret_id)

    def close(self) -> None:
        """Stop following the change stream and drop its connections (so the server is not kept
        waiting for them when it shuts down)."""
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for response in responses:
            _abort(response)

    def __enter__(self) -> SecretReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the change stream ------------------------------------------------------------------------------
    def _subscribe(self, secret_id: str) -> None:
        if not self.watch:
            return
        with self._lock:
            if secret_id in self._watched:
                return
            thread = threading.Thread(
                target=self._follow, args=(secret_id,), daemon=True, name=f"khoa-watch-{secret_id}"
            )
            self._watched[secret_id] = thread
            thread.start()

    def _signed_request(self, secret_id: str, last_event_id: str | None) -> urllib.request.Request:
        endpoint = self.client.meta.endpoint_url.rstrip("/")
        url = f"{endpoint}/_khoa/events?SecretId={quote(secret_id, safe='')}"
        request = AWSRequest(method="GET", url=url, headers={"Accept": "text/event-stream"})
        if last_event_id:
            request.headers["Last-Event-ID"] = last_event_id
        credentials = self.client._request_signer._credentials  # the client's own credentials
        SigV4Auth(
            credentials.get_frozen_credentials(), "secretsmanager", self.client.meta.region_name
        ).add_auth(request)
        return urllib.request.Request(url, headers=dict(request.headers.items()), method="GET")  # noqa: S310

    def _follow(self, secret_id: str) -> None:
        last_event_id: str | None = None
        while not self._stop.is_set():
            try:
                request = self._signed_request(secret_id, last_event_id)
                with _NO_REDIRECTS.open(request, timeout=60) as response:
                    with self._lock:
                        self._responses[secret_id] = response
                    if self._stop.is_set():
                        return
                    if last_event_id is None:
                        # AWSCURRENT may have moved between the first read and this subscription
                        self.invalidate(secret_id)
                    event_kind = ""
                    while not self._stop.is_set():
                        raw = response.readline(_MAX_LINE + 1)
                        if not raw:
                            break
                        if len(raw) > _MAX_LINE:
                            raise ValueError("change stream line too long")
                        line = raw.decode("utf-8").rstrip("\n")
                        if line.startswith("id: "):
                            last_event_id = line[4:]
                        elif line.startswith("event: "):
                            event_kind = line[7:]
                        elif line.startswith("data: "):
                            payload = json.loads(line[6:])
                            if not isinstance(payload, dict):
                                raise ValueError("change event is not a JSON object")
                            self._on_event(secret_id, event_kind, payload)
                    if self._stop.is_set():
                        return
            except (OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                log.debug(
                    "change stream for %s interrupted (%s); reconnecting", secret_id, type(exc).__name__
                )
                self._stop.wait(1.0)
            finally:
                with self._lock:
                    self._responses.pop(secret_id, None)

    def _on_event(self, secret_id: str, kind: str, payload: dict[str, Any]) -> None:
        detail = payload.get("detail")
        detail = detail if isinstance(detail, dict) else {}
        if kind in ("StagesMoved", "RotationSucceeded") and (
            kind == "RotationSucceeded" or detail.get("currentMoved")
        ):
            try:
                self.invalidate(secret_id)
            except Exception:  # noqa: BLE001 - a failed refresh leaves the cache's own TTL in charge
                log.warning("could not refresh %s after AWSCURRENT moved", secret_id)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is refused, never followed: following it would send the signed request (its
    Authorization, replayable for minutes, and the session token) to wherever the answer points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# The stream's opener: urllib's, but a 3xx ends the connection attempt (HTTPError) instead.
_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects())
# The longest line a change stream may send (an event is a few hundred bytes).
_MAX_LINE = 64 * 1024


def _abort(response: Any) -> None:
    """End a streaming response another thread is blocked reading: shutting the socket down wakes the
    reader (closing the file alone does not)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    try:
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        else:
            response.close()
    except OSError:
        pass
