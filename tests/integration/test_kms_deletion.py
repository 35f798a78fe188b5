"""Scheduled key deletion through boto3: the window, cancellation, and destruction by the job runner."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.server import KhoaServer

DAY = 86400


def listed_key_ids(kms: Any) -> set[str]:
    return {k["KeyId"] for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]}


def listed_aliases(kms: Any) -> set[str]:
    return {a["AliasName"] for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]}


def test_schedule_key_deletion_response_and_state(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"pending")["CiphertextBlob"]
    scheduled = kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyId"] == key["Arn"]
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    # The key's CreationDate is "now" on the server's (domain) clock.
    assert abs(scheduled["DeletionDate"] - (key["CreationDate"] + timedelta(days=7))) < timedelta(minutes=10)

    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["Enabled"] is False
    assert described["DeletionDate"] == scheduled["DeletionDate"]
    assert described["PendingDeletionWindowInDays"] == 7

    assert error_code(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "KMSInvalidStateException"
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"
    assert error_code(kms.schedule_key_deletion, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    assert error_code(kms.enable_key, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    assert error_code(kms.disable_key, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    # The key still appears in ListKeys until it is destroyed.
    assert key["KeyId"] in listed_key_ids(kms)


def test_default_window_is_30_days(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    scheduled = kms.schedule_key_deletion(KeyId=key["Arn"])
    assert scheduled["PendingWindowInDays"] == 30
    assert abs(scheduled["DeletionDate"] - (key["CreationDate"] + timedelta(days=30))) < timedelta(minutes=10)


@pytest.mark.parametrize("days", [1, 6, 31, 365])
def test_window_out_of_range(kms: Any, days: int) -> None:
    key = kms.create_key()["KeyMetadata"]
    assert error_code(kms.schedule_key_deletion, KeyId=key["KeyId"], PendingWindowInDays=days) == (
        "ValidationException"
    )
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_cancel_key_deletion(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"saved")["CiphertextBlob"]
    assert error_code(kms.cancel_key_deletion, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=10)
    assert kms.cancel_key_deletion(KeyId=key["KeyId"])["KeyId"] == key["Arn"]

    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert described["Enabled"] is False
    assert "DeletionDate" not in described
    assert "PendingDeletionWindowInDays" not in described
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "DisabledException"
    kms.enable_key(KeyId=key["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"saved"


def test_deletion_errors(kms: Any) -> None:
    missing = "0b0b0b0b-1111-4222-8333-444455556666"
    assert error_code(kms.schedule_key_deletion, KeyId=missing, PendingWindowInDays=7) == "NotFoundException"
    assert error_code(kms.cancel_key_deletion, KeyId=missing) == "NotFoundException"
    key = kms.create_key()["KeyMetadata"]
    alias = f"alias/deletion-{key['KeyId'][:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    # ScheduleKeyDeletion takes a key id or key ARN, not an alias.
    assert error_code(kms.schedule_key_deletion, KeyId=alias, PendingWindowInDays=7) == "NotFoundException"


def test_key_is_destroyed_when_the_window_ends(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    doomed = kms.create_key(Tags=[{"TagKey": "t", "TagValue": "v"}])["KeyMetadata"]
    survivor = kms.create_key()["KeyMetadata"]
    rescued = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=doomed["KeyId"])
    kms.create_grant(
        KeyId=doomed["KeyId"], GranteePrincipal="arn:aws:iam::111122223333:root", Operations=["Decrypt"]
    )
    kms.enable_key_rotation(KeyId=doomed["KeyId"])
    kms.rotate_key_on_demand(KeyId=doomed["KeyId"])
    old = kms.encrypt(KeyId=doomed["KeyId"], Plaintext=b"last words", EncryptionContext={"c": "1"})
    kept = kms.encrypt(KeyId=survivor["KeyId"], Plaintext=b"still here")["CiphertextBlob"]
    rescued_blob = kms.encrypt(KeyId=rescued["KeyId"], Plaintext=b"rescued")["CiphertextBlob"]

    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    kms.schedule_key_deletion(KeyId=rescued["KeyId"], PendingWindowInDays=7)

    # Six days in, the window is still open: the key can still be rescued.
    server.advance_clock(6 * DAY)
    server.run_jobs()
    assert kms.describe_key(KeyId=doomed["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=rescued["KeyId"])

    server.advance_clock(1 * DAY + 60)
    server.run_jobs()

    assert error_code(kms.describe_key, KeyId=doomed["KeyId"]) == "NotFoundException"
    assert error_code(kms.describe_key, KeyId="alias/doomed") == "NotFoundException"
    # The ciphertext no longer opens (its key is unknown now; cryptoops treats it as invalid).
    assert error_code(kms.decrypt, CiphertextBlob=old["CiphertextBlob"], EncryptionContext={"c": "1"}) in (
        "NotFoundException",
        "InvalidCiphertextException",
    )
    assert error_code(kms.list_grants, KeyId=doomed["KeyId"]) == "NotFoundException"
    assert error_code(kms.cancel_key_deletion, KeyId=doomed["KeyId"]) == "NotFoundException"
    assert doomed["KeyId"] not in listed_key_ids(kms)
    assert "alias/doomed" not in listed_aliases(kms)

    # Other keys are untouched; the rescued key is Disabled until enabled again.
    assert kms.decrypt(CiphertextBlob=kept)["Plaintext"] == b"still here"
    assert kms.describe_key(KeyId=rescued["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=rescued["KeyId"])
    assert kms.decrypt(CiphertextBlob=rescued_blob)["Plaintext"] == b"rescued"

    # The material is gone from storage, not merely hidden: no rows mention the key any more.
    server.stop()
    with sqlite3.connect(fresh_server.data_dir / "khoa.db") as db:
        for table in ("kms_keys", "kms_key_versions", "kms_tags", "kms_grants"):
            count = db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE key_id = ?", (doomed["KeyId"],)
            ).fetchone()
            assert count == (0,), table
        assert db.execute(
            "SELECT COUNT(*) FROM kms_aliases WHERE target_key_id = ?", (doomed["KeyId"],)
        ).fetchone() == (0,)
