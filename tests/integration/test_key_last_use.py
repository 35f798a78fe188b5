"""GetKeyLastUsage and GetAccessKeyLastUsed through the wire, on SQLite and PostgreSQL: answered
before the leader has counted a use (from the events it has not reached), after (from the last-use
tables), and after the trail's events are gone (retention), when only the tables still know."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import delete, func, select

from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.server import KhoaServer


@pytest.fixture(params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KhoaServer]:
    url = request.getfixturevalue("private_postgres") if request.param == "postgresql" else ""
    instance = KhoaServer(tmp_path / "data", database_url=url).start()
    yield instance
    instance.stop()


def _database_url(server: KhoaServer) -> str:
    return server.database_url or f"sqlite:///{server.data_dir / 'khoa.db'}"


def _drop_the_trail(server: KhoaServer) -> None:
    """Every recorded event leaves the database, as retention would remove them."""
    engine = create_database_engine(_database_url(server))
    try:
        with engine.begin() as conn:
            conn.execute(delete(schema.audit_events))
            assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 0
    finally:
        engine.dispose()


def _usage(kms: Any, key_id: str) -> dict[str, Any] | None:
    usage: dict[str, Any] | None = kms.get_key_last_usage(KeyId=key_id).get("KeyLastUsage")
    return usage


def test_last_use_is_answered_before_and_after_it_is_counted_and_outlives_the_trail(
    store_server: KhoaServer,
) -> None:
    kms, iam = store_server.client("kms"), store_server.client("iam")
    used = kms.create_key(Description="used")["KeyMetadata"]
    never = kms.create_key(Description="never used")["KeyMetadata"]
    iam.create_user(UserName="reader")
    signing = iam.create_access_key(UserName="reader")["AccessKey"]
    idle = iam.create_access_key(UserName="reader")["AccessKey"]
    sts = store_server.client(
        "sts",
        aws_access_key_id=signing["AccessKeyId"],
        aws_secret_access_key=signing["SecretAccessKey"],
    )
    sts.get_caller_identity()
    blob = kms.encrypt(KeyId=used["KeyId"], Plaintext=b"payload")["CiphertextBlob"]
    with pytest.raises(ClientError):  # a failed call is not a use
        kms.decrypt(CiphertextBlob=blob, KeyId=never["KeyId"])

    uncounted = _usage(kms, used["Arn"])
    assert uncounted is not None and uncounted["Operation"] == "Encrypt" and uncounted["KmsRequestId"]
    signed = iam.get_access_key_last_used(AccessKeyId=signing["AccessKeyId"])["AccessKeyLastUsed"]
    assert (signed["ServiceName"], signed["Region"]) == ("sts", "us-east-1")

    assert store_server.run_jobs() > 0  # the leader counts them
    assert _usage(kms, used["KeyId"]) == uncounted
    assert iam.get_access_key_last_used(AccessKeyId=signing["AccessKeyId"])["AccessKeyLastUsed"] == signed

    # A call that claims a key without its secret is no use of it.
    forged = store_server.client(
        "sts", aws_access_key_id=idle["AccessKeyId"], aws_secret_access_key="not-the-secret-access-key"
    )
    with pytest.raises(ClientError):
        forged.get_caller_identity()
    assert store_server.run_jobs() > 0

    _drop_the_trail(store_server)
    assert _usage(kms, used["KeyId"]) == uncounted  # the table still knows
    assert _usage(kms, never["KeyId"]) is None
    assert iam.get_access_key_last_used(AccessKeyId=signing["AccessKeyId"])["AccessKeyLastUsed"] == signed
    assert iam.get_access_key_last_used(AccessKeyId=idle["AccessKeyId"])["AccessKeyLastUsed"] == {
        "ServiceName": "N/A",
        "Region": "N/A",
    }

    kms.decrypt(CiphertextBlob=blob)  # a newer use, not counted yet, wins over the table's
    newer = _usage(kms, used["KeyId"])
    assert newer is not None and newer["Operation"] == "Decrypt"
    assert newer["CloudTrailEventId"] != uncounted["CloudTrailEventId"]
    assert newer["Timestamp"] >= uncounted["Timestamp"]
