"""Key rotation through boto3: automatic (test clock + job runner) and on demand."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import error_code
from tests.support.server import KhoaServer

DAY = 86400


def rotations(kms: Any, key_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in kms.get_paginator("list_key_rotations").paginate(KeyId=key_id, **kwargs):
        out.extend(page["Rotations"])
    return out


def close_to(moment: datetime, expected: datetime, slack: timedelta = timedelta(minutes=10)) -> bool:
    return abs(moment - expected) <= slack


def test_enable_disable_and_status(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    status = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert status["KeyRotationEnabled"] is False
    assert status["KeyId"] == key["Arn"]
    assert "NextRotationDate" not in status

    kms.enable_key_rotation(KeyId=key["KeyId"])
    status = kms.get_key_rotation_status(KeyId=key["Arn"])
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 365
    # The key's CreationDate is "now" on the server's (domain) clock.
    assert close_to(status["NextRotationDate"], key["CreationDate"] + timedelta(days=365))

    kms.enable_key_rotation(KeyId=key["KeyId"], RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert status["RotationPeriodInDays"] == 90
    assert close_to(status["NextRotationDate"], key["CreationDate"] + timedelta(days=90))

    kms.disable_key_rotation(KeyId=key["KeyId"])
    status = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status


@pytest.mark.parametrize("days", [90, 2560])
def test_rotation_period_bounds_accepted(kms: Any, days: int) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"], RotationPeriodInDays=days)
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["RotationPeriodInDays"] == days


@pytest.mark.parametrize("days", [0, 89, 2561, 10000])
def test_rotation_period_out_of_range(server: KhoaServer, kms: Any, days: int) -> None:
    # botocore refuses values below the minimum before sending; switch that off so the server decides.
    unchecked = server.client("kms", validate=False)
    key = kms.create_key()["KeyMetadata"]
    with pytest.raises(ClientError) as info:
        unchecked.enable_key_rotation(KeyId=key["KeyId"], RotationPeriodInDays=days)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "rotationPeriodInDays" in info.value.response["Error"]["Message"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is False


def test_rotate_on_demand_keeps_old_ciphertexts(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    first_material = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    before = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"before", EncryptionContext={"k": "v"})
    assert rotations(kms, key["KeyId"]) == []

    assert kms.rotate_key_on_demand(KeyId=key["KeyId"])["KeyId"] == key["Arn"]
    second_material = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    assert second_material != first_material
    # On-demand rotation does not enable automatic rotation.
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is False

    listed = rotations(kms, key["KeyId"])
    assert len(listed) == 1
    [entry] = listed
    assert entry["KeyId"] == key["Arn"]
    assert entry["RotationType"] == "ON_DEMAND"
    assert entry["KeyMaterialId"] == second_material
    assert entry["KeyMaterialState"] == "CURRENT"
    assert close_to(entry["RotationDate"], key["CreationDate"])

    opened = kms.decrypt(CiphertextBlob=before["CiphertextBlob"], EncryptionContext={"k": "v"})
    assert opened["Plaintext"] == b"before"
    assert opened["KeyMaterialId"] == first_material

    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    assert data_key["KeyMaterialId"] == second_material
    after = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
    assert after["Plaintext"] == data_key["Plaintext"]
    assert after["KeyMaterialId"] == second_material

    # ReEncrypt moves an old ciphertext onto the current material.
    moved = kms.re_encrypt(
        CiphertextBlob=before["CiphertextBlob"],
        SourceEncryptionContext={"k": "v"},
        DestinationKeyId=key["KeyId"],
        DestinationEncryptionContext={"k": "v"},
    )
    assert moved["SourceKeyMaterialId"] == first_material
    assert moved["DestinationKeyMaterialId"] == second_material


def test_list_key_rotations_all_material_and_paging(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    first_material = key["CurrentKeyMaterialId"]
    for _ in range(3):
        kms.rotate_key_on_demand(KeyId=key["KeyId"])
    current = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]

    only_rotations = rotations(kms, key["KeyId"])
    assert len(only_rotations) == 3
    assert rotations(kms, key["KeyId"], IncludeKeyMaterial="ROTATIONS_ONLY") == only_rotations
    assert [r["KeyMaterialState"] for r in only_rotations] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]
    assert only_rotations[-1]["KeyMaterialId"] == current

    everything = rotations(kms, key["KeyId"], IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert len(everything) == 4
    initial = everything[0]
    assert initial["KeyMaterialId"] == first_material
    assert initial["KeyMaterialState"] == "NON_CURRENT"
    # AWS: RotationDate and RotationType are not present for the first key material.
    assert "RotationType" not in initial
    assert "RotationDate" not in initial

    page = kms.list_key_rotations(KeyId=key["KeyId"], Limit=2)
    assert page["Truncated"] is True and len(page["Rotations"]) == 2
    rest = kms.list_key_rotations(KeyId=key["KeyId"], Limit=2, Marker=page["NextMarker"])
    assert rest["Truncated"] is False and "NextMarker" not in rest
    assert page["Rotations"] + rest["Rotations"] == only_rotations


@pytest.mark.parametrize(
    "create",
    [
        {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
        {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
        {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
    ],
    ids=["rsa", "ecc", "hmac"],
)
def test_unsupported_key_types(kms: Any, create: dict[str, str]) -> None:
    key = kms.create_key(**create)["KeyMetadata"]
    for call, extra in (
        (kms.enable_key_rotation, {}),
        (kms.enable_key_rotation, {"RotationPeriodInDays": 180}),
        (kms.disable_key_rotation, {}),
        (kms.get_key_rotation_status, {}),
        (kms.rotate_key_on_demand, {}),
        (kms.list_key_rotations, {}),
    ):
        assert error_code(call, KeyId=key["KeyId"], **extra) == "UnsupportedOperationException", call


def test_imported_key_material_cannot_rotate_automatically(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert error_code(kms.enable_key_rotation, KeyId=key["KeyId"]) == "UnsupportedOperationException"


def test_rotation_key_state_errors(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    assert error_code(kms.enable_key_rotation, KeyId=key["KeyId"]) == "DisabledException"
    assert error_code(kms.rotate_key_on_demand, KeyId=key["KeyId"]) == "DisabledException"
    kms.enable_key(KeyId=key["KeyId"])
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert error_code(kms.enable_key_rotation, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    assert error_code(kms.rotate_key_on_demand, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    assert error_code(kms.get_key_rotation_status, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    assert error_code(kms.rotate_key_on_demand, KeyId="8f1a1d2c-0000-4000-8000-000000000000") == (
        "NotFoundException"
    )


def test_automatic_rotation_when_the_clock_passes_the_period(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    rotating = kms.create_key()["KeyMetadata"]
    idle = kms.create_key()["KeyMetadata"]
    disabled = kms.create_key()["KeyMetadata"]
    kms.enable_key_rotation(KeyId=rotating["KeyId"], RotationPeriodInDays=90)
    kms.enable_key_rotation(KeyId=disabled["KeyId"], RotationPeriodInDays=90)
    kms.disable_key(KeyId=disabled["KeyId"])
    old = kms.encrypt(KeyId=rotating["KeyId"], Plaintext=b"year one")["CiphertextBlob"]
    first_next = kms.get_key_rotation_status(KeyId=rotating["KeyId"])["NextRotationDate"]

    # Not yet due: nothing happens.
    server.advance_clock(89 * DAY)
    server.run_jobs()
    assert rotations(kms, rotating["KeyId"]) == []

    server.advance_clock(2 * DAY)
    server.run_jobs()
    [entry] = rotations(kms, rotating["KeyId"])
    assert entry["RotationType"] == "AUTOMATIC"
    assert entry["KeyMaterialState"] == "CURRENT"
    current = kms.describe_key(KeyId=rotating["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    assert entry["KeyMaterialId"] == current != rotating["CurrentKeyMaterialId"]
    status = kms.get_key_rotation_status(KeyId=rotating["KeyId"])
    assert status["NextRotationDate"] > first_next + timedelta(days=85)

    # Running the jobs again the same day does not rotate twice.
    server.run_jobs()
    assert len(rotations(kms, rotating["KeyId"])) == 1

    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"year one"
    fresh = kms.encrypt(KeyId=rotating["KeyId"], Plaintext=b"year two")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"year two"

    # Keys without rotation, and disabled keys, keep their material.
    assert rotations(kms, idle["KeyId"]) == []
    assert rotations(kms, disabled["KeyId"]) == []

    # A second period later it rotates again, and every ciphertext still opens.
    server.advance_clock(91 * DAY)
    server.run_jobs()
    assert [r["RotationType"] for r in rotations(kms, rotating["KeyId"])] == ["AUTOMATIC", "AUTOMATIC"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"year one"
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"year two"

    # A disabled key that was due rotates once it is enabled again and the jobs run.
    kms.enable_key(KeyId=disabled["KeyId"])
    server.run_jobs()
    assert [r["RotationType"] for r in rotations(kms, disabled["KeyId"])] == ["AUTOMATIC"]
