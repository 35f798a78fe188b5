"""A fake XKS proxy for tests and benchmarks: AWS's External Key Store Proxy API (v1) over in-memory
AES-256 keys, in a thread of the test process.

It verifies each request's SigV4 signature with botocore (service ``kms-xks-proxy``), keeps keys by
external key id, builds the AES-GCM AAD as the spec says (length-prefixed AAD and ciphertext
metadata), returns ciphertext metadata and the ciphertext data integrity value, answers the spec's
errors, and remembers what it was sent (``seen``) so tests can check what a proxy learns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PATH = "/kms/xks/v1"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([A-Z2-7]+)/(\d{8})/([a-z0-9-]+)/kms-xks-proxy/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


def new_credential() -> tuple[str, str]:
    """An access key id and secret as the spec describes them (base32 id, base64 secret)."""
    access_key_id = base64.b32encode(secrets.token_bytes(15)).decode()[:24]
    return access_key_id, base64.b64encode(secrets.token_bytes(32)).decode()


def _spec_aad(aad: bytes, metadata: bytes) -> bytes:
    return len(aad).to_bytes(2, "big") + aad + len(metadata).to_bytes(1, "big") + metadata


class FakeXksProxy:
    """A small XKS proxy: the spec's four operations over in-memory AES-256 keys."""

    def __init__(self) -> None:
        self.access_key_id, self.secret = new_credential()
        self.keys: dict[str, bytes] = {}
        self.disabled: set[str] = set()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_key(self, key_id: str) -> str:
        self.keys[key_id] = AESGCM.generate_key(256)
        return key_id

    def start(self, port: int = 0) -> FakeXksProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._answer(self, 405, {"errorName": "ValidationException"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = proxy.handle(self, body)
                proxy._answer(self, status, answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def signature_ok(self, handler: BaseHTTPRequestHandler, body: bytes) -> bool:
        match = _AUTH.fullmatch(handler.headers.get("Authorization", ""))
        if match is None or match[1] != self.access_key_id:
            return False
        signed = match[4].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return False
        amz_date = handler.headers["X-Amz-Date"]
        request = AWSRequest(
            method="POST",
            url=f"http://{handler.headers['Host']}{handler.path}",
            data=body,
            headers={name: handler.headers[name] for name in signed},
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.access_key_id, self.secret), "kms-xks-proxy", match[3])
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        return amz_date[:8] == match[2] and hmac.compare_digest(expected, match[5])

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, Any]]:
        if not self.signature_ok(handler, body):
            self.bad_signatures += 1
            return 401, {"errorName": "AuthenticationFailedException"}
        request = json.loads(body)
        path = handler.path
        self.seen.append((path, request))
        if not path.startswith(PATH + "/"):
            return 404, {"errorName": "InvalidUriPathException"}
        rest = path[len(PATH) :]
        if rest == "/health":
            return 200, {
                "xksProxyFleetSize": 1,
                "xksProxyVendor": "Test",
                "xksProxyModel": "Fake 1.0",
                "ekmVendor": "Test",
                "ekmFleetDetails": [{"id": "ekm-1", "model": "memory", "healthStatus": "ACTIVE"}],
            }
        match = re.fullmatch(r"/keys/([A-Za-z0-9._-]{1,128})/(metadata|encrypt|decrypt)", rest)
        if match is None:
            return 404, {"errorName": "InvalidUriPathException"}
        key_id, operation = match[1], match[2]
        if key_id not in self.keys:
            return 404, {"errorName": "KeyNotFoundException"}
        if operation == "metadata":
            status = "DISABLED" if key_id in self.disabled else "ENABLED"
            return 200, {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": status}
        if key_id in self.disabled:
            return 400, {"errorName": "InvalidStateException"}
        key = AESGCM(self.keys[key_id])
        aad = base64.b64decode(request.get("additionalAuthenticatedData", ""))
        if operation == "encrypt":
            iv, metadata = os.urandom(12), b"fake-v1"
            sealed = key.encrypt(iv, base64.b64decode(request["plaintext"]), _spec_aad(aad, metadata))
            ciphertext, tag = sealed[:-16], sealed[-16:]
            answer = {
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "ciphertextMetadata": base64.b64encode(metadata).decode(),
                "initializationVector": base64.b64encode(iv).decode(),
                "authenticationTag": base64.b64encode(tag).decode(),
            }
            if request.get("ciphertextDataIntegrityValueAlgorithm") == "SHA_256":
                digest = hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest()
                answer["ciphertextDataIntegrityValue"] = base64.b64encode(digest).decode()
            return 200, answer
        metadata = base64.b64decode(request.get("ciphertextMetadata", ""))
        try:
            plaintext = key.decrypt(
                base64.b64decode(request["initializationVector"]),
                base64.b64decode(request["ciphertext"]) + base64.b64decode(request["authenticationTag"]),
                _spec_aad(aad, metadata),
            )
        except InvalidTag:
            return 400, {"errorName": "InvalidCiphertextException"}
        return 200, {"plaintext": base64.b64encode(plaintext).decode()}
