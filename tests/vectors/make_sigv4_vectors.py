"""Regenerate ``sigv4_botocore.json``: requests signed by botocore's own SigV4Auth at a frozen time.

Run from the repository root: ``.venv/bin/python tests/vectors/make_sigv4_vectors.py``. The output is
checked in; ``tests/unit/test_sigv4.py`` checks that Khoa's verifier accepts every vector (and
rejects it once tampered with), and that botocore still produces the recorded signatures.

Each vector records the request as it goes on the wire (method, percent-encoded path, raw query
string, headers in order with repeats, body) plus what botocore computed for it: the canonical
request, the string to sign, the signing key and the Authorization header.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

OUT = Path(__file__).with_name("sigv4_botocore.json")

# Test-only credentials: never valid anywhere.
ACCESS_KEY = "AKIDKHOAVECTOR000001"
SECRET_KEY = "khoa/vector+secret/0000000000000000000000"
TOKEN = "khoa-vector-session-token//+=="

CASES: list[dict[str, Any]] = [
    {
        "name": "kms-post-json",
        "description": "a typical awsJson1_1 call as boto3 sends it",
        "service": "kms",
        "region": "us-east-1",
        "timestamp": "20260301T101112Z",
        "method": "POST",
        "url": "https://kms.us-east-1.amazonaws.com/",
        "headers": [
            ("X-Amz-Target", "TrentService.Encrypt"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        "body": b'{"KeyId": "alias/app", "Plaintext": "aGVsbG8="}',
    },
    {
        "name": "empty-post",
        "description": "POST with an empty body (the empty-string SHA-256)",
        "service": "kms",
        "region": "eu-west-1",
        "timestamp": "20260301T000000Z",
        "method": "POST",
        "url": "http://127.0.0.1:9440/",
        "headers": [("X-Amz-Target", "TrentService.ListKeys")],
        "body": b"",
    },
    {
        "name": "get-query-params",
        "description": "GET with query parameters (awsQuery style)",
        "service": "iam",
        "region": "us-east-1",
        "timestamp": "20260302T121314Z",
        "method": "GET",
        "url": "https://iam.amazonaws.com/",
        "params": [("Action", "ListUsers"), ("Version", "2010-05-08")],
        "headers": [],
        "body": b"",
    },
    {
        "name": "query-repeated-unsorted",
        "description": "repeated and unsorted query parameters sort by key, then by value",
        "service": "sts",
        "region": "us-west-2",
        "timestamp": "20260303T235959Z",
        "method": "GET",
        "url": "https://sts.us-west-2.amazonaws.com/",
        "params": [("b", "2"), ("a", "z"), ("a", "y"), ("A", "upper"), ("a", "x"), ("c", "")],
        "headers": [],
        "body": b"",
    },
    {
        "name": "query-encoded",
        "description": "query keys and values needing percent-encoding (space, /, +, =, &, unicode, ~)",
        "service": "sts",
        "region": "ap-southeast-2",
        "timestamp": "20260304T010203Z",
        "method": "GET",
        "url": "https://sts.ap-southeast-2.amazonaws.com/",
        "params": [
            ("key with space", "v/a+l=u&e"),
            ("~tilde-_.", "é ü 日本"),
            ("star*", "(paren)'quote'!"),
            ("empty", ""),
        ],
        "headers": [],
        "body": b"",
    },
    {
        "name": "path-special-characters",
        "description": "a path with encoded space, unicode, encoded slash and reserved characters",
        "service": "secretsmanager",
        "region": "us-east-2",
        "timestamp": "20260305T050505Z",
        "method": "GET",
        "url": "https://example.amazonaws.com/foo%20bar/%C3%BCmlaut/a%2Fb/c%3Dd/e$f/@g~h",
        "headers": [],
        "body": b"",
    },
    {
        "name": "path-dot-segments",
        "description": "dot segments and repeated slashes are normalised away (non-S3 services)",
        "service": "kms",
        "region": "us-east-1",
        "timestamp": "20260306T060606Z",
        "method": "GET",
        "url": "https://example.amazonaws.com/a/./b/../c//d/",
        "headers": [],
        "body": b"",
    },
    {
        "name": "headers-whitespace-and-repeats",
        "description": "extra and inner whitespace, tabs, repeated headers, mixed-case names",
        "service": "kms",
        "region": "us-east-1",
        "timestamp": "20260307T070707Z",
        "method": "POST",
        "url": "https://kms.us-east-1.amazonaws.com/",
        "headers": [
            ("X-Amz-Target", "TrentService.ListKeys"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("My-Header1", "    a   b   c  "),
            ("my-header2", '    "a   b   c"  '),
            ("X-Repeated", "first"),
            ("X-Repeated", "  second   value "),
            ("X-Repeated", "third"),
            ("X-Tabbed", "one\ttwo  \t three"),
            ("ZZ-Last", "z"),
        ],
        "body": b"{}",
    },
    {
        "name": "session-token",
        "description": "temporary credentials: X-Amz-Security-Token is added and signed",
        "service": "kms",
        "region": "eu-central-1",
        "timestamp": "20260308T080808Z",
        "token": TOKEN,
        "method": "POST",
        "url": "https://kms.eu-central-1.amazonaws.com/",
        "headers": [
            ("X-Amz-Target", "TrentService.Decrypt"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        "body": b'{"CiphertextBlob": "AAAA"}',
    },
    {
        "name": "date-header",
        "description": "the request carries a Date header, which botocore signs instead of X-Amz-Date",
        "service": "kms",
        "region": "us-east-1",
        "timestamp": "20260309T090909Z",
        "method": "POST",
        "url": "https://kms.us-east-1.amazonaws.com/",
        "headers": [
            ("X-Amz-Target", "TrentService.ListAliases"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Date", "placeholder"),
        ],
        "body": b"{}",
    },
    {
        "name": "unsigned-payload",
        "description": "X-Amz-Content-SHA256: UNSIGNED-PAYLOAD replaces the body hash",
        "service": "kms",
        "region": "us-east-1",
        "timestamp": "20260310T101010Z",
        "method": "POST",
        "url": "https://kms.us-east-1.amazonaws.com/",
        "headers": [
            ("X-Amz-Target", "TrentService.ListKeys"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
        ],
        "body": b'{"Limit": 5}',
    },
    {
        "name": "binary-body-and-port",
        "description": "non-UTF-8 body bytes, a host with a port, PUT",
        "service": "ssm",
        "region": "us-gov-west-1",
        "timestamp": "20261231T235959Z",
        "method": "PUT",
        "url": "http://localhost:8080/path",
        "headers": [("Content-Type", "application/octet-stream")],
        "body": bytes(range(256)),
    },
]


class _RecordingSigner(SigV4Auth):
    """SigV4Auth that remembers the canonical request and string to sign it produced."""

    recorded: tuple[str, str] = ("", "")

    def string_to_sign(self, request: AWSRequest, canonical_request: str) -> str:
        result: str = super().string_to_sign(request, canonical_request)
        self.recorded = (canonical_request, result)
        return result


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def build(case: dict[str, Any]) -> dict[str, Any]:
    when = datetime.datetime.strptime(case["timestamp"], "%Y%m%dT%H%M%SZ")
    request = AWSRequest(method=case["method"], url=case["url"], data=case["body"], params=case.get("params"))
    for name, value in case["headers"]:
        request.headers[name] = value  # HTTPHeaders: assigning again appends a repeat
    signer = _RecordingSigner(
        Credentials(ACCESS_KEY, SECRET_KEY, case.get("token")), case["service"], case["region"]
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    canonical, string_to_sign = signer.recorded
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = [[name, value] for name, value in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.insert(0, ["Host", parts.netloc])
    authorization = request.headers["Authorization"]
    return {
        "name": case["name"],
        "description": case["description"],
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "service": case["service"],
        "region": case["region"],
        "timestamp": case["timestamp"],
        "method": case["method"],
        "path": parts.path or "/",
        "query": parts.query,
        "headers": headers,
        "body_base64": base64.b64encode(case["body"]).decode(),
        "expected": {
            "canonical_request": canonical,
            "string_to_sign": string_to_sign,
            "signing_key_hex": _signing_key(
                SECRET_KEY, case["timestamp"][:8], case["region"], case["service"]
            ).hex(),
            "signature": authorization.rsplit("Signature=", 1)[1],
            "authorization": authorization,
        },
    }


def main() -> None:
    vectors = [build(case) for case in CASES]
    OUT.write_text(json.dumps({"generator": "botocore.auth.SigV4Auth", "vectors": vectors}, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
