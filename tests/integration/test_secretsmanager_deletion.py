"""DeleteSecret and RestoreSecret through boto3 against a real server: the recovery window (7 to 30 days,
default 30), ForceDeleteWithoutRecovery, and the job runner destroying secrets when the window ends."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.server import KhoaServer

DAY = 86400


def close_to(moment: datetime, expected: datetime) -> bool:
    return abs(moment - expected) < timedelta(minutes=5)


def test_default_window_is_30_days(sm: Any) -> None:
    name = secret_name("delete")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    deleted = sm.delete_secret(SecretId=name)
    assert deleted["ARN"] == arn
    assert deleted["Name"] == name
    assert close_to(deleted["DeletionDate"], datetime.now(UTC) + timedelta(days=30))
    described = sm.describe_secret(SecretId=name)
    assert close_to(described["DeletedDate"], datetime.now(UTC))


@pytest.mark.parametrize("days", [7, 18, 30])
def test_recovery_window(sm: Any, days: int) -> None:
    name = secret_name("delete")
    sm.create_secret(Name=name, SecretString="v")
    deleted = sm.delete_secret(SecretId=name, RecoveryWindowInDays=days)
    assert close_to(deleted["DeletionDate"], datetime.now(UTC) + timedelta(days=days))


@pytest.mark.parametrize("days", [0, 6, 31, -1])
def test_recovery_window_out_of_range(sm: Any, days: int) -> None:
    name = secret_name("delete")
    sm.create_secret(Name=name, SecretString="v")
    assert error_code(sm.delete_secret, SecretId=name, RecoveryWindowInDays=days) == (
        "InvalidParameterException"
    )
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)


def test_window_and_force_together_are_refused(sm: Any) -> None:
    name = secret_name("delete")
    sm.create_secret(Name=name, SecretString="v")
    code = error_code(
        sm.delete_secret, SecretId=name, RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True
    )
    assert code == "InvalidParameterException"


def test_deleted_secret_is_readable_only_as_metadata(sm: Any) -> None:
    name = secret_name("delete")
    sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "a", "Value": "b"}])
    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": "a", "Value": "b"}]
    assert sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert error_code(sm.get_secret_value, SecretId=name) == "InvalidRequestException"
    assert error_code(sm.put_secret_value, SecretId=name, SecretString="w") == "InvalidRequestException"
    assert error_code(
        sm.update_secret_version_stage, SecretId=name, VersionStage="x", MoveToVersionId="a" * 32
    ) == ("InvalidRequestException")
    assert error_code(sm.rotate_secret, SecretId=name) == "InvalidRequestException"
    # deleting it again without force is refused
    assert error_code(sm.delete_secret, SecretId=name) == "InvalidRequestException"


def test_restore(sm: Any) -> None:
    name = secret_name("delete")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    sm.delete_secret(SecretId=name)
    restored = sm.restore_secret(SecretId=name)
    assert restored == {**restored, "ARN": arn, "Name": name}
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"
    # restoring a secret that is not deleted is harmless
    sm.restore_secret(SecretId=name)
    assert error_code(sm.restore_secret, SecretId=secret_name("missing")) == "ResourceNotFoundException"


def test_force_delete(sm: Any) -> None:
    name = secret_name("delete")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    deleted = sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert deleted["ARN"] == arn
    assert close_to(deleted["DeletionDate"], datetime.now(UTC))
    assert error_code(sm.describe_secret, SecretId=name) == "ResourceNotFoundException"
    # the name is free again at once
    sm.create_secret(Name=name, SecretString="new")


def test_force_delete_of_a_scheduled_secret(sm: Any) -> None:
    name = secret_name("delete")
    sm.create_secret(Name=name, SecretString="v")
    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    assert error_code(sm.describe_secret, SecretId=name) == "ResourceNotFoundException"


def test_missing_secret(sm: Any) -> None:
    assert error_code(sm.delete_secret, SecretId=secret_name("missing")) == "ResourceNotFoundException"
    # "If you forcibly delete an already deleted or nonexistent secret, the operation does not return
    # ResourceNotFoundException."
    name = secret_name("missing")
    deleted = sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    assert deleted["Name"] == name


def test_job_runner_destroys_secrets_when_the_window_ends(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    sm = server.client("secretsmanager")
    short, long_, restored = secret_name("short"), secret_name("long"), secret_name("restored")
    for name in (short, long_, restored):
        sm.create_secret(Name=name, SecretString="v", Tags=[{"Key": "k", "Value": "v"}])
        sm.put_secret_value(SecretId=name, SecretString="w")
    sm.delete_secret(SecretId=short, RecoveryWindowInDays=7)
    sm.delete_secret(SecretId=long_, RecoveryWindowInDays=30)
    sm.delete_secret(SecretId=restored, RecoveryWindowInDays=7)
    sm.restore_secret(SecretId=restored)

    server.advance_clock(6 * DAY)
    assert server.run_jobs() > 0
    assert "DeletedDate" in sm.describe_secret(SecretId=short)

    server.advance_clock(1 * DAY + 60)
    assert server.run_jobs() > 0
    assert error_code(sm.describe_secret, SecretId=short) == "ResourceNotFoundException"
    assert "DeletedDate" in sm.describe_secret(SecretId=long_)
    assert sm.get_secret_value(SecretId=restored)["SecretString"] == "w"
    # the name can be used again, under a new ARN
    sm.create_secret(Name=short, SecretString="reborn")

    server.advance_clock(23 * DAY)
    server.run_jobs()
    assert error_code(sm.describe_secret, SecretId=long_) == "ResourceNotFoundException"
    listed = sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]
    assert {s["Name"] for s in listed} == {short, restored}

    # versions, labels and tags of destroyed secrets are gone from the database too
    server.stop()
    db = sqlite3.connect(server.data_dir / "khoa.db")
    try:
        counts = {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("sm_secrets", "sm_versions", "sm_stages", "sm_tags")
        }
    finally:
        db.close()
    assert counts == {"sm_secrets": 2, "sm_versions": 3, "sm_stages": 3, "sm_tags": 1}
