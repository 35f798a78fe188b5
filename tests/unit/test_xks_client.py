"""The XKS client's pieces that need no proxy: the ciphertext data integrity value (the known answer
of the XKS Proxy API specification's Appendix C) and SigV4 signing as an XKS proxy verifies it."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from khoa.services.kms.xks import Proxy, cdiv, sign


def test_cdiv_matches_the_specification_example() -> None:
    value = cdiv(
        aad=b"project=nile,department=marketing",
        metadata=base64.b64decode("a2V5X3ZlcnNpb249MQ=="),
        iv=base64.b64decode("HMrlRw85cAJUd5Ax"),
        ciphertext=base64.b64decode("ghxkK1txeDNn3q8Y"),
        tag=base64.b64decode("vBxN2ncH1oEkR8WVXpmyYQ=="),
    )
    assert base64.b64encode(value).decode() == "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="


def test_signature_verifies_with_botocore() -> None:
    proxy = Proxy(
        "https://xks.example.com:8443",
        "/tenant/kms/xks/v1",
        "ABCDEFGHIJKLMNOPQRST234567",
        "c2VjcmV0" * 6,
        "eu-west-1",
    )
    url = proxy.endpoint + proxy.uri_path + "/keys/k-1/encrypt"
    body = b'{"requestMetadata": {}}'
    headers = sign(proxy, url, body, datetime(2026, 12, 6, 9, 30, tzinfo=UTC))
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=(\w+)/20261206/eu-west-1/kms-xks-proxy/aws4_request, "
        r"SignedHeaders=([a-z;-]+), Signature=([0-9a-f]{64})",
        headers["Authorization"],
    )
    assert match is not None and match[1] == proxy.access_key_id
    assert headers["Host"] == "xks.example.com:8443"
    assert headers["X-Amz-Date"] == "20261206T093000Z"
    signed = match[2].split(";")
    assert {"host", "x-amz-date"} <= set(signed)
    request = AWSRequest(method="POST", url=url, data=body, headers={h: headers[h.title()] for h in signed})
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(
        Credentials(proxy.access_key_id, proxy.secret_access_key), "kms-xks-proxy", "eu-west-1"
    )
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert expected == match[3]
    # any change to the body breaks it
    tampered = AWSRequest(
        method="POST", url=url, data=body + b" ", headers={h: headers[h.title()] for h in signed}
    )
    tampered.context["timestamp"] = headers["X-Amz-Date"]
    assert (
        signer.signature(signer.string_to_sign(tampered, signer.canonical_request(tampered)), tampered)
        != match[3]
    )
