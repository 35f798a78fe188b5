"""No secret value is stored in the clear: after writing secrets through every path that stores a value
(CreateSecret, PutSecretValue, UpdateSecret, a KMS key change, replication), no file in the data
directory (database, WAL, anything else) nor the server log holds any of them, raw, hex or base64."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.support.server import KhoaServer

pytestmark = pytest.mark.slow


def forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        secret.decode("latin-1").encode("utf-16-le"),
    ]


def leaks(paths: list[Path], secrets: dict[str, bytes]) -> list[str]:
    """Which named secrets appear in which files; names only, never the values."""
    found = []
    for path in paths:
        content = path.read_bytes()
        for name, secret in secrets.items():
            if any(form in content for form in forms(secret)):
                found.append(f"{name} in {path.name}")
    return found


def test_no_secret_value_in_the_data_dir(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    sm = server.client("secretsmanager")
    kms = server.client("kms")
    marker = b"KHOA-SM-MARKER-" + os.urandom(12).hex().encode()
    secrets = {f"value {i}": marker + f"-{i}".encode() for i in range(7)}

    key = kms.create_key()["KeyMetadata"]
    sm.create_secret(Name="rest/string", SecretString=secrets["value 0"].decode())
    sm.create_secret(Name="rest/binary", SecretBinary=secrets["value 1"], KmsKeyId=key["KeyId"])
    sm.put_secret_value(SecretId="rest/string", SecretString=secrets["value 2"].decode())
    sm.update_secret(SecretId="rest/string", SecretString=secrets["value 3"].decode())
    sm.update_secret(SecretId="rest/string", KmsKeyId=key["Arn"])  # re-encrypts labelled versions
    sm.put_secret_value(SecretId="rest/binary", SecretBinary=secrets["value 4"], VersionStages=["AWSPENDING"])
    sm.create_secret(
        Name="rest/replicated",
        SecretString=secrets["value 5"].decode(),
        AddReplicaRegions=[{"Region": "eu-west-1"}],
    )
    sm.put_secret_value(SecretId="rest/replicated", SecretString=secrets["value 6"].decode())
    # everything reads back
    assert sm.get_secret_value(SecretId="rest/string")["SecretString"].encode() == secrets["value 3"]
    assert sm.get_secret_value(SecretId="rest/binary")["SecretBinary"] == secrets["value 1"]
    replica = server.client("secretsmanager", region="eu-west-1")
    assert replica.get_secret_value(SecretId="rest/replicated")["SecretString"].encode() == secrets["value 6"]

    # with the server running (WAL not yet checkpointed) and after it stops
    files = [p for p in sorted(server.data_dir.rglob("*")) if p.is_file()]
    assert any(p.name.startswith("khoa.db") for p in files)
    assert leaks(files, secrets) == []
    server.stop()
    files = [p for p in sorted(server.data_dir.rglob("*")) if p.is_file()]
    assert leaks([*files, server.log_path], secrets) == []
