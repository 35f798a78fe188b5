"""The unmodified aws CLI (v1, from the venv) against a signature-checking server."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.support.awscli import AwsCli, aws_cli
from tests.support.server import ACCOUNT_ID, KhoaServer


@pytest.fixture
def cli(server: KhoaServer) -> AwsCli:
    return aws_cli(server.endpoint)


def test_encrypt_a_file_and_decrypt_it_back(cli: AwsCli, tmp_path: Path) -> None:
    key = cli.json("kms", "create-key", "--description", "cli file key")["KeyMetadata"]
    assert key["AWSAccountId"] == ACCOUNT_ID
    alias = f"alias/cli-{key['KeyId'][:8]}"
    cli.run("kms", "create-alias", "--alias-name", alias, "--target-key-id", key["KeyId"])

    plaintext = bytes(range(256)) * 15 + os.urandom(256)  # binary, NULs, exactly 4096 bytes
    assert len(plaintext) == 4096
    source = tmp_path / "secret.bin"
    source.write_bytes(plaintext)

    blob_b64 = cli.text(
        "kms", "encrypt", "--key-id", alias, "--plaintext", f"fileb://{source}",
        "--encryption-context", "purpose=cli,team=khoa", "--query", "CiphertextBlob",
    )  # fmt: skip
    encrypted = tmp_path / "secret.enc"
    encrypted.write_bytes(base64.b64decode(blob_b64))

    out = cli.json(
        "kms", "decrypt", "--ciphertext-blob", f"fileb://{encrypted}",
        "--encryption-context", "purpose=cli,team=khoa",
    )  # fmt: skip
    assert out["KeyId"] == key["Arn"]
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    decrypted = tmp_path / "secret.out"
    decrypted.write_bytes(base64.b64decode(out["Plaintext"]))
    assert decrypted.read_bytes() == plaintext


def test_decrypt_with_the_wrong_context_fails(cli: AwsCli, tmp_path: Path) -> None:
    key_id = cli.text("kms", "create-key", "--query", "KeyMetadata.KeyId")
    source = tmp_path / "p.txt"
    source.write_text("hello")
    blob = cli.text(
        "kms", "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{source}",
        "--encryption-context", "a=b", "--query", "CiphertextBlob",
    )  # fmt: skip
    encrypted = tmp_path / "p.enc"
    encrypted.write_bytes(base64.b64decode(blob))
    result = cli.run("kms", "decrypt", "--ciphertext-blob", f"fileb://{encrypted}", check=False)
    assert result.returncode == 255  # aws CLI v1: a service error
    assert "(InvalidCiphertextException)" in result.stderr


def test_not_found_error(cli: AwsCli) -> None:
    result = cli.run("kms", "describe-key", "--key-id", "alias/no-such-alias", check=False)
    assert result.returncode == 255  # aws CLI v1: a service error
    assert "An error occurred (NotFoundException) when calling the DescribeKey operation" in result.stderr


def test_cli_paginates_list_keys(cli: AwsCli) -> None:
    created = {cli.text("kms", "create-key", "--query", "KeyMetadata.KeyId") for _ in range(3)}
    listed = cli.json("kms", "list-keys", "--page-size", "1")["Keys"]
    assert created <= {k["KeyId"] for k in listed}
    assert len(listed) == len({k["KeyId"] for k in listed})


def test_generate_data_key_and_tags(cli: AwsCli) -> None:
    key_id = cli.text(
        "kms", "create-key", "--tags", "TagKey=env,TagValue=test", "--query", "KeyMetadata.KeyId"
    )
    tags = cli.json("kms", "list-resource-tags", "--key-id", key_id)["Tags"]
    assert tags == [{"TagKey": "env", "TagValue": "test"}]
    data_key = cli.json("kms", "generate-data-key", "--key-id", key_id, "--key-spec", "AES_256")
    assert len(base64.b64decode(data_key["Plaintext"])) == 32


def test_wrong_secret(cli: AwsCli) -> None:
    cli.env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    result = cli.run("kms", "list-keys", check=False)
    assert result.returncode == 255  # aws CLI v1: a service error
    assert "(InvalidSignatureException)" in result.stderr
    assert "The request signature we calculated does not match" in result.stderr


def test_unknown_access_key(cli: AwsCli) -> None:
    cli.env["AWS_ACCESS_KEY_ID"] = "AKIAUNKNOWNKEY000000"
    result = cli.run("kms", "list-keys", check=False)
    assert result.returncode == 255  # aws CLI v1: a service error
    assert "(UnrecognizedClientException)" in result.stderr
    assert "The security token included in the request is invalid." in result.stderr


def test_readme_flow_with_the_root_credentials_file(server: KhoaServer, tmp_path: Path) -> None:
    """README: ``export AWS_SHARED_CREDENTIALS_FILE=.khoa/root-credentials AWS_DEFAULT_REGION=us-east-1``."""
    credentials = server.data_dir / "root-credentials"
    assert credentials.exists()
    assert credentials.stat().st_mode & 0o777 == 0o600
    cli = aws_cli(server.endpoint, credentials=None)
    cli.env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    key_id = cli.text("kms", "create-key", "--description", "file key", "--query", "KeyMetadata.KeyId")
    source = tmp_path / "secret.txt"
    source.write_bytes(b"readme secret\n")
    blob = cli.text(
        "kms", "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{source}", "--query", "CiphertextBlob"
    )
    encrypted = tmp_path / "secret.enc"
    encrypted.write_bytes(base64.b64decode(blob))
    plaintext = cli.text(
        "kms", "decrypt", "--ciphertext-blob", f"fileb://{encrypted}", "--query", "Plaintext"
    )
    assert base64.b64decode(plaintext) == b"readme secret\n"


def test_another_region(cli: AwsCli) -> None:
    arn = cli.text("--region", "sa-east-1", "kms", "create-key", "--query", "KeyMetadata.Arn")
    assert arn.startswith(f"arn:aws:kms:sa-east-1:{ACCOUNT_ID}:key/")
