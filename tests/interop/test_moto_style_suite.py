"""A test suite written for moto's server mode runs unchanged against ``khoa server --dev``.

moto's documented setup: fake credentials ("testing"/"testing") in the environment, the endpoint in
``AWS_ENDPOINT_URL``, ``POST /moto-api/reset`` between tests, account 123456789012. The test bodies
below are what such a suite typically contains; nothing in them knows about Khoa.
"""

from __future__ import annotations

import base64
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.support.server import KhoaServer

MOTO_ACCOUNT_ID = "123456789012"


@pytest.fixture(scope="module")
def moto_like_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(
        tmp_path_factory.mktemp("khoa-moto") / "data",
        dev=True,
        extra_env={"KHOA_ACCOUNT_ID": MOTO_ACCOUNT_ID},
    ).start()
    yield instance
    instance.stop()


@pytest.fixture
def aws_credentials(
    moto_like_server: KhoaServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """moto's recommended fixture, plus AWS_ENDPOINT_URL (server mode)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_like_server.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    yield
    # what moto's server-mode harness does after every test
    reset = urllib.request.Request(f"{moto_like_server.endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(reset, timeout=30) as response:
        assert response.status == 200


# -- the suite: plain boto3, as written against moto ----------------------------------------------


def test_create_key_and_alias(aws_credentials: None) -> None:
    client = boto3.client("kms", region_name="us-east-1")
    key = client.create_key(Description="my key", Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]
    assert key["AWSAccountId"] == MOTO_ACCOUNT_ID
    assert key["Arn"] == f"arn:aws:kms:us-east-1:{MOTO_ACCOUNT_ID}:key/{key['KeyId']}"
    assert key["KeyState"] == "Enabled"

    client.create_alias(AliasName="alias/my-key", TargetKeyId=key["KeyId"])
    aliases = {a["AliasName"]: a for a in client.list_aliases(KeyId=key["KeyId"])["Aliases"]}
    assert aliases["alias/my-key"]["TargetKeyId"] == key["KeyId"]
    assert aliases["alias/my-key"]["AliasArn"] == f"arn:aws:kms:us-east-1:{MOTO_ACCOUNT_ID}:alias/my-key"
    assert client.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "team", "TagValue": "a"}]


def test_encrypt_decrypt(aws_credentials: None) -> None:
    client = boto3.client("kms", region_name="us-east-1")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=key_id)

    encrypted = client.encrypt(KeyId="alias/app", Plaintext=b"data", EncryptionContext={"env": "test"})
    assert encrypted["KeyId"] == f"arn:aws:kms:us-east-1:{MOTO_ACCOUNT_ID}:key/{key_id}"
    assert encrypted["CiphertextBlob"] != b"data"

    decrypted = client.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"env": "test"})
    assert decrypted["Plaintext"] == b"data"
    assert decrypted["KeyId"] == encrypted["KeyId"]

    with pytest.raises(client.exceptions.InvalidCiphertextException):
        client.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"env": "prod"})


def test_generate_data_key(aws_credentials: None) -> None:
    client = boto3.client("kms")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    data_key = client.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32
    assert client.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]


def test_list_and_describe(aws_credentials: None) -> None:
    client = boto3.client("kms")
    ids = [client.create_key(Description=f"key {i}")["KeyMetadata"]["KeyId"] for i in range(3)]
    listed = [
        k["KeyId"]
        for page in client.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
        for k in page["Keys"]
    ]
    assert sorted(listed) == sorted(ids)
    assert client.describe_key(KeyId=ids[1])["KeyMetadata"]["Description"] == "key 1"


def test_disable_and_schedule_deletion(aws_credentials: None) -> None:
    client = boto3.client("kms")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.disable_key(KeyId=key_id)
    assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(client.exceptions.DisabledException):
        client.encrypt(KeyId=key_id, Plaintext=b"x")
    response = client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert response["KeyState"] == "PendingDeletion"


def test_errors_are_the_documented_exceptions(aws_credentials: None) -> None:
    client = boto3.client("kms")
    with pytest.raises(client.exceptions.NotFoundException):
        client.describe_key(KeyId="alias/does-not-exist")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/taken", TargetKeyId=key_id)
    with pytest.raises(client.exceptions.AlreadyExistsException):
        client.create_alias(AliasName="alias/taken", TargetKeyId=key_id)


def test_each_test_starts_empty(aws_credentials: None) -> None:
    """The reset after every test isolates them, as with moto."""
    client = boto3.client("kms")
    assert client.list_keys()["Keys"] == []
    customer_aliases = [
        a for a in client.list_aliases()["Aliases"] if not a["AliasName"].startswith("alias/aws/")
    ]
    assert customer_aliases == []


def test_resource_clients_and_base64_blobs(aws_credentials: None) -> None:
    """Some suites pass the ciphertext around as base64 text."""
    client = boto3.session.Session().client("kms")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    text = base64.b64encode(client.encrypt(KeyId=key_id, Plaintext=b"\x00\xff")["CiphertextBlob"]).decode()
    assert client.decrypt(CiphertextBlob=base64.b64decode(text))["Plaintext"] == b"\x00\xff"
