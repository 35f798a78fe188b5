"""The server starts, answers health, and serves a signed KMS round trip."""

from __future__ import annotations

import json
import urllib.request

from tests.support.server import ACCOUNT_ID, KhoaServer


def test_health(server: KhoaServer) -> None:
    with urllib.request.urlopen(f"{server.endpoint}/_khoa/health") as response:
        body = json.loads(response.read())
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["sealed"] is False


def test_encrypt_decrypt_round_trip(kms) -> None:  # type: ignore[no-untyped-def]
    key = kms.create_key(Description="smoke")["KeyMetadata"]
    assert key["AWSAccountId"] == ACCOUNT_ID
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"hello", EncryptionContext={"app": "smoke"})
    out = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"app": "smoke"})
    assert out["Plaintext"] == b"hello"
    assert out["KeyId"] == key["Arn"]
