"""The AWS Encryption SDK for Python, unmodified, with Khoa as its KMS.

The SDK builds its own KMS clients from a botocore session (one per region, named by the key ARN),
so Khoa's endpoint is set where botocore looks for it without code changes: ``endpoint_url`` in the
session's profile (the shared config file, botocore >= 1.31). ``AWS_ENDPOINT_URL_KMS`` in the
environment works the same way.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import boto3
import botocore.session
import pytest
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.key_providers.kms import DiscoveryFilter
from cryptography.exceptions import InvalidSignature, InvalidTag

from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

MIB = 1024 * 1024
CONTEXT = {"purpose": "interop", "tenant": "khoa"}


@pytest.fixture
def session(server: KhoaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> botocore.session.Session:
    """A botocore session whose clients (including the SDK's regional KMS clients) talk to Khoa."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile khoa]\nendpoint_url = {server.endpoint}\nregion = {REGION}\n")
    result = botocore.session.Session(profile="khoa")
    result.set_config_variable("config_file", str(config))
    result.set_config_variable("credentials_file", str(tmp_path / "no-credentials"))
    result.set_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    return result


@pytest.fixture
def kms(session: botocore.session.Session) -> Any:
    return boto3.session.Session(botocore_session=session).client("kms")


@pytest.fixture
def key_arns(kms: Any) -> Iterator[list[str]]:
    yield [kms.create_key(Description=f"esdk {i}")["KeyMetadata"]["Arn"] for i in range(2)]


@pytest.fixture
def sdk() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def _provider(session: botocore.session.Session, arns: list[str]) -> Any:
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=arns, botocore_session=session)


def test_the_session_points_at_khoa(server: KhoaServer, kms: Any) -> None:
    assert kms.meta.endpoint_url == server.endpoint


def test_one_mebibyte_with_an_encryption_context(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    plaintext = os.urandom(MIB)
    provider = _provider(session, key_arns[:1])
    ciphertext, header = sdk.encrypt(source=plaintext, key_provider=provider, encryption_context=CONTEXT)
    assert len(ciphertext) > MIB
    assert [k.key_provider.key_info.decode() for k in header.encrypted_data_keys] == key_arns[:1]
    assert all(k.key_provider.provider_id == "aws-kms" for k in header.encrypted_data_keys)

    decrypted, decrypted_header = sdk.decrypt(
        source=ciphertext, key_provider=_provider(session, key_arns[:1])
    )
    assert decrypted == plaintext
    assert CONTEXT.items() <= decrypted_header.encryption_context.items()
    assert "aws-crypto-public-key" in decrypted_header.encryption_context  # signed suite by default


def test_either_of_two_kms_keys_decrypts(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    plaintext = os.urandom(64 * 1024)
    ciphertext, header = sdk.encrypt(
        source=plaintext, key_provider=_provider(session, key_arns), encryption_context=CONTEXT
    )
    assert len(header.encrypted_data_keys) == 2
    for arn in key_arns:
        assert sdk.decrypt(source=ciphertext, key_provider=_provider(session, [arn]))[0] == plaintext


def test_streaming_and_an_unsigned_suite(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    plaintext = os.urandom(MIB + 12345)
    provider = _provider(session, key_arns[:1])
    sink = io.BytesIO()
    with sdk.stream(
        mode="e",
        source=io.BytesIO(plaintext),
        key_provider=provider,
        encryption_context=CONTEXT,
        algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        frame_length=64 * 1024,
    ) as encryptor:
        for chunk in encryptor:
            sink.write(chunk)
    out = io.BytesIO()
    with sdk.stream(mode="d", source=io.BytesIO(sink.getvalue()), key_provider=provider) as decryptor:
        for chunk in decryptor:
            out.write(chunk)
        assert CONTEXT.items() <= decryptor.header.encryption_context.items()
    assert out.getvalue() == plaintext


def test_a_key_that_did_not_encrypt_cannot_decrypt(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    ciphertext, _ = sdk.encrypt(source=b"x" * 100, key_provider=_provider(session, key_arns[:1]))
    with pytest.raises(AWSEncryptionSDKClientError):
        sdk.decrypt(source=ciphertext, key_provider=_provider(session, key_arns[1:]))


def test_disabled_key_cannot_decrypt(
    sdk: Any, session: botocore.session.Session, kms: Any, key_arns: list[str]
) -> None:
    ciphertext, _ = sdk.encrypt(source=b"y" * 100, key_provider=_provider(session, key_arns[:1]))
    kms.disable_key(KeyId=key_arns[0])
    try:
        with pytest.raises((DecryptKeyError, AWSEncryptionSDKClientError)):
            sdk.decrypt(source=ciphertext, key_provider=_provider(session, key_arns[:1]))
    finally:
        kms.enable_key(KeyId=key_arns[0])
    assert sdk.decrypt(source=ciphertext, key_provider=_provider(session, key_arns[:1]))[0] == b"y" * 100


def test_discovery_provider_limited_to_the_account(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    ciphertext, _ = sdk.encrypt(source=b"discover me", key_provider=_provider(session, key_arns[:1]))
    discovery = aws_encryption_sdk.DiscoveryAwsKmsMasterKeyProvider(
        botocore_session=session,
        discovery_filter=DiscoveryFilter(account_ids=[ACCOUNT_ID], partition="aws"),
    )
    assert sdk.decrypt(source=ciphertext, key_provider=discovery)[0] == b"discover me"


def test_tampered_message_is_refused(
    sdk: Any, session: botocore.session.Session, key_arns: list[str]
) -> None:
    ciphertext, _ = sdk.encrypt(source=os.urandom(4096), key_provider=_provider(session, key_arns[:1]))
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 2] ^= 0x01  # inside the encrypted body
    with pytest.raises((AWSEncryptionSDKClientError, InvalidTag, InvalidSignature)):  # the SDK lets these out
        sdk.decrypt(source=bytes(tampered), key_provider=_provider(session, key_arns[:1]))


def test_endpoint_from_the_environment_also_works(
    server: KhoaServer, sdk: Any, key_arns: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint)
    plain = botocore.session.Session()
    plain.set_config_variable("config_file", str(tmp_path / "no-config"))
    plain.set_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    provider = _provider(plain, key_arns[:1])
    ciphertext, _ = sdk.encrypt(source=b"env", key_provider=provider, encryption_context=CONTEXT)
    assert sdk.decrypt(source=ciphertext, key_provider=provider)[0] == b"env"
