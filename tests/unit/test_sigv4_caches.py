"""The caches on the SigV4 hot path hold pure derivations only: the signature is still checked on every
request, each cache stays bounded, and the HMAC finished from cached pads is the hmac module's."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from khoa.auth import sigv4
from khoa.auth.sigv4 import SIGNATURE_MISMATCH, SignedRequest, SigV4Verifier
from khoa.protocol import awsjson
from khoa.protocol.errors import AWSError
from khoa.server.asgi import header_map

AKID = "AKIDCACHES0000000001"
SECRET = "caches/secret+0000000000000000000000000"
SKEW = dt.timedelta(minutes=5)


def _signed(body: bytes) -> tuple[SignedRequest, dt.datetime]:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:9440/",
        data=body,
        headers={"X-Amz-Target": "secretsmanager.GetSecretValue", "Host": "127.0.0.1:9440"},
    )
    SigV4Auth(Credentials(AKID, SECRET), "secretsmanager", "us-east-1").add_auth(request)
    scope = {"headers": [(n.lower().encode(), v.encode()) for n, v in request.headers.items()]}
    headers = header_map(scope)
    now = dt.datetime.strptime(headers["x-amz-date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return SignedRequest("POST", "/", "", headers, body), now


def _verify(verifier: SigV4Verifier, request: SignedRequest, now: dt.datetime) -> sigv4.VerifiedSignature:
    return verifier.verify(
        request, service="secretsmanager", now=now, skew=SKEW, lookup_secret={AKID: SECRET}.get
    )


def test_a_parsed_header_seen_again_is_still_checked_against_the_request() -> None:
    verifier = SigV4Verifier()
    request, now = _signed(b'{"SecretId":"a"}')
    for _ in range(3):  # valid, tampered, valid again: the parse is shared, the verdict never is
        assert _verify(verifier, request, now).access_key_id == AKID
        for tampered in (
            SignedRequest("POST", "/", "", request.headers, b'{"SecretId":"b"}'),
            SignedRequest("PUT", "/", "", request.headers, request.body),
            SignedRequest("POST", "/x", "", request.headers, request.body),
            SignedRequest("POST", "/", "a=1", request.headers, request.body),
            SignedRequest("POST", "/", "", {**request.headers, "x-amz-target": ["x.y"]}, request.body),
        ):
            with pytest.raises(AWSError) as excinfo:
                _verify(verifier, tampered, now)
            assert (excinfo.value.code, excinfo.value.message) == (
                "InvalidSignatureException",
                SIGNATURE_MISMATCH,
            )
        with pytest.raises(AWSError) as excinfo:
            verifier.verify(
                request, service="secretsmanager", now=now, skew=SKEW, lookup_secret=lambda _a: "other"
            )
        assert excinfo.value.message == SIGNATURE_MISMATCH


def test_the_caches_stay_bounded() -> None:
    verifier = SigV4Verifier()
    now = dt.datetime(2026, 3, 1, 10, 11, 12, tzinfo=dt.UTC)
    for i in range(sigv4._MAX_CACHED_HEADERS + 10):
        header = (
            f"AWS4-HMAC-SHA256 Credential={AKID}/20260301/us-east-1/secretsmanager/aws4_request, "
            f"SignedHeaders=host, Signature={i:064x}"
        )
        stamp = (now + dt.timedelta(seconds=i % 200)).strftime("%Y%m%dT%H%M%SZ")
        request = SignedRequest(
            "POST", f"/p{i}", "", {"authorization": [header], "x-amz-date": [stamp], "host": ["h"]}, b""
        )
        with pytest.raises(AWSError):
            verifier.verify(
                request, service="secretsmanager", now=now, skew=SKEW, lookup_secret=lambda _a: SECRET
            )
        header_map({"headers": [(f"x-made-up-{i}".encode(), b"v")]})
    assert 0 < sigv4._authorization.cache_info().currsize <= sigv4._MAX_CACHED_HEADERS
    assert 0 < sigv4._parse_amz_date.cache_info().currsize <= sigv4._MAX_CACHED_DATES
    assert 0 < sigv4._canonical_uri.cache_info().currsize <= sigv4._MAX_CACHED_PATHS
    from khoa.server import asgi

    info = asgi._header_name.cache_info()
    assert 0 < info.currsize <= (info.maxsize or 0)


def test_header_map_keeps_repeats_in_order_and_lowercases_names() -> None:
    scope = {"headers": [(b"X-A", b"1"), (b"x-a", b"2"), (b"Host", b"h"), (b"X-A", b"3")]}
    assert header_map(scope) == {"x-a": ["1", "2", "3"], "host": ["h"]}
    assert header_map(scope) == {"x-a": ["1", "2", "3"], "host": ["h"]}  # names now cached


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, (1, True)),
        ([], (1, True)),
        ("s", (0, True)),
        ("\ud800", (0, False)),
        (1, (0, True)),
        ({"a": [{"b": "é"}]}, (3, True)),
        ({"a": [{"\udc00": 1}]}, (3, False)),
        ({"a": [[[["x\ud83d"]]]]}, (5, False)),
        ([{"k": "v"}, [[], [[]]]], (4, True)),
    ],
)
def test_inspect_depth_and_encodability(document: object, expected: tuple[int, bool]) -> None:
    assert awsjson._inspect(document) == expected
