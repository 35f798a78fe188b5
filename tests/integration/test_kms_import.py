"""Bring your own key through boto3: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from tests.support.errors import error_code
from tests.support.server import KhoaServer

HOUR = 3600
DAY = 86400
ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"]
WRAPPING_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096"]


def _oaep(algorithm: str) -> padding.OAEP:
    chosen: hashes.HashAlgorithm = hashes.SHA1() if algorithm.endswith("SHA_1") else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(chosen), algorithm=chosen, label=None)


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """Wrap key material the way the AWS docs tell customers to (OpenSSL's equivalents)."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, _oaep(algorithm))
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, _oaep(algorithm)) + aes_key_wrap_with_padding(aes_key, material)


def import_material(
    kms: Any,
    key_id: str,
    material: bytes,
    algorithm: str = "RSAES_OAEP_SHA_256",
    spec: str = "RSA_2048",
    **extra: Any,
) -> dict[str, Any]:
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)
    if not extra:
        extra = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    return dict(
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
            **extra,
        )
    )


def pkcs8(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.mark.parametrize("spec", WRAPPING_SPECS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_import_symmetric_material(kms: Any, algorithm: str, spec: str) -> None:
    key = kms.create_key(Origin="EXTERNAL", Description="byok")["KeyMetadata"]
    assert key["Origin"] == "EXTERNAL"
    assert key["KeyState"] == "PendingImport"
    assert key["Enabled"] is False
    assert "CurrentKeyMaterialId" not in key

    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    assert params["KeyId"] == key["Arn"]
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == int(spec.split("_")[1])
    valid_for = params["ParametersValidTo"] - key["CreationDate"]
    assert timedelta(hours=23) < valid_for <= timedelta(hours=24, minutes=5)

    material = os.urandom(32)
    result = kms.import_key_material(
        KeyId=key["KeyId"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert result["KeyId"] == key["Arn"]
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled"
    assert described["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert "ValidTo" not in described
    assert described["CurrentKeyMaterialId"] == result["KeyMaterialId"]

    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"imported", EncryptionContext={"a": "b"})
    assert kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "b"})["Plaintext"] == (
        b"imported"
    )


def test_import_with_valid_to(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    valid_to = (key["CreationDate"] + timedelta(days=30)).replace(microsecond=0)
    import_material(
        kms, key["KeyId"], os.urandom(32), ValidTo=valid_to, ExpirationModel="KEY_MATERIAL_EXPIRES"
    )
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert described["ValidTo"] == valid_to
    # KEY_MATERIAL_EXPIRES is the default model.
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    import_material(kms, other["KeyId"], os.urandom(32), ValidTo=valid_to)
    assert kms.describe_key(KeyId=other["KeyId"])["KeyMetadata"]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"


def test_import_parameter_validation(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    wrapped = wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32))
    base = {"KeyId": key["KeyId"], "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": wrapped}
    # KEY_MATERIAL_EXPIRES (the default) needs ValidTo; DOES_NOT_EXPIRE must not have one.
    assert error_code(kms.import_key_material, **base) == "ValidationException"
    assert error_code(kms.import_key_material, **base, ExpirationModel="KEY_MATERIAL_EXPIRES") == (
        "ValidationException"
    )
    future = key["CreationDate"] + timedelta(days=1)
    assert (
        error_code(
            kms.import_key_material, **base, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", ValidTo=future
        )
        == "ValidationException"
    )
    past = key["CreationDate"] - timedelta(days=1)
    assert error_code(kms.import_key_material, **base, ValidTo=past) == "ValidationException"
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"


def test_reimport_different_material_is_refused(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    material = os.urandom(32)
    first = import_material(kms, key["KeyId"], material)
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"pinned")["CiphertextBlob"]

    with pytest.raises(ClientError) as info:
        import_material(kms, key["KeyId"], os.urandom(32))
    assert info.value.response["Error"]["Code"] == "IncorrectKeyMaterialException"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"pinned"

    # After deleting, only the same material can come back - and then old ciphertexts open again.
    deleted = kms.delete_imported_key_material(KeyId=key["KeyId"])
    assert deleted["KeyId"] == key["Arn"]
    with pytest.raises(ClientError) as info:
        import_material(kms, key["KeyId"], os.urandom(32), "RSA_AES_KEY_WRAP_SHA_256", "RSA_3072")
    assert info.value.response["Error"]["Code"] == "IncorrectKeyMaterialException"
    again = import_material(kms, key["KeyId"], material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_3072")
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"pinned"


def test_bad_import_tokens_and_wrapping(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    wrapped = wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32))
    common = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "EncryptedKeyMaterial": wrapped}

    assert (
        error_code(kms.import_key_material, KeyId=key["KeyId"], ImportToken=os.urandom(64), **common)
        == "InvalidImportTokenException"
    )
    assert (
        error_code(kms.import_key_material, KeyId=key["KeyId"], ImportToken=b"short", **common)
        == "InvalidImportTokenException"
    )
    # A token issued for another key is not valid for this one.
    assert (
        error_code(kms.import_key_material, KeyId=other["KeyId"], ImportToken=params["ImportToken"], **common)
        == "InvalidImportTokenException"
    )
    # Material wrapped under some other public key does not unwrap.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    stranger_der = stranger.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (
        error_code(
            kms.import_key_material,
            KeyId=key["KeyId"],
            ImportToken=params["ImportToken"],
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            EncryptedKeyMaterial=wrap(stranger_der, "RSAES_OAEP_SHA_256", os.urandom(32)),
        )
        == "InvalidCiphertextException"
    )
    # The wrong OAEP hash does not unwrap either.
    assert (
        error_code(
            kms.import_key_material,
            KeyId=key["KeyId"],
            ImportToken=params["ImportToken"],
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32)),
        )
        == "InvalidCiphertextException"
    )
    # Symmetric material must be 256 bits.
    assert (
        error_code(
            kms.import_key_material,
            KeyId=key["KeyId"],
            ImportToken=params["ImportToken"],
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(16)),
        )
        == "IncorrectKeyMaterialException"
    )
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"
    # The valid token still works after all those failures.
    kms.import_key_material(KeyId=key["KeyId"], ImportToken=params["ImportToken"], **common)
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_import_operations_need_an_external_key(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    assert (
        error_code(
            kms.get_parameters_for_import,
            KeyId=key["KeyId"],
            WrappingAlgorithm="RSAES_OAEP_SHA_256",
            WrappingKeySpec="RSA_2048",
        )
        == "UnsupportedOperationException"
    )
    assert error_code(kms.delete_imported_key_material, KeyId=key["KeyId"]) == "UnsupportedOperationException"


def test_delete_imported_key_material(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    imported = import_material(kms, key["KeyId"], os.urandom(32))
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"soon gone")["CiphertextBlob"]

    deleted = kms.delete_imported_key_material(KeyId=key["KeyId"])
    assert deleted["KeyId"] == key["Arn"]
    assert deleted["KeyMaterialId"] == imported["KeyMaterialId"]
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingImport"
    assert described["Enabled"] is False
    assert error_code(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "KMSInvalidStateException"
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"
    assert error_code(kms.enable_key, KeyId=key["KeyId"]) == "KMSInvalidStateException"


def test_reimporting_never_enables_a_disabled_key(kms: Any) -> None:
    """Only EnableKey undoes DisableKey: whoever may import material (to change its expiry) must not
    put a key an administrator took out of service back into use."""
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    import_material(kms, key, material)
    blob = kms.encrypt(KeyId=key, Plaintext=b"payroll")["CiphertextBlob"]
    kms.disable_key(KeyId=key)
    import_material(kms, key, material)
    described = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (described["KeyState"], described["Enabled"]) == ("Disabled", False)
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "DisabledException"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"payroll"


def test_cancelling_deletion_of_a_key_whose_material_was_deleted(kms: Any) -> None:
    """A key whose imported material is gone comes back PendingImport, whichever worker answers
    (each worker caches opened material; the database decides)."""
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_material(kms, key, os.urandom(32))
    for _ in range(4):  # every worker opens (and caches) the material
        kms.encrypt(KeyId=key, Plaintext=b"x")
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    kms.delete_imported_key_material(KeyId=key)
    kms.cancel_key_deletion(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_import_hmac_material(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    material = os.urandom(32)
    import_material(kms, key["KeyId"], material, "RSAES_OAEP_SHA_256", "RSA_4096")
    mac = kms.generate_mac(KeyId=key["KeyId"], Message=b"message", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert mac == hmac.new(material, b"message", hashlib.sha256).digest()
    assert kms.verify_mac(KeyId=key["KeyId"], Message=b"message", MacAlgorithm="HMAC_SHA_256", Mac=mac)[
        "MacValid"
    ]

    wrong_size = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")
    with pytest.raises(ClientError) as info:
        import_material(kms, wrong_size["KeyMetadata"]["KeyId"], os.urandom(16))
    assert info.value.response["Error"]["Code"] == "IncorrectKeyMaterialException"


def test_import_ecc_signing_material(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    private = ec.generate_private_key(ec.SECP256R1())
    import_material(kms, key["KeyId"], pkcs8(private), "RSA_AES_KEY_WRAP_SHA_256", "RSA_3072")

    expected_public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kms.get_public_key(KeyId=key["KeyId"])["PublicKey"] == expected_public
    signature = kms.sign(KeyId=key["KeyId"], Message=b"signed", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(signature, b"signed", ec.ECDSA(hashes.SHA256()))


def test_import_ecc_material_with_rsaes_oaep(kms: Any) -> None:
    # AWS: RSAES_OAEP_* wraps every kind of material except RSA private keys.
    key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    private = ec.generate_private_key(ec.SECP256R1())
    import_material(kms, key["KeyId"], pkcs8(private), "RSAES_OAEP_SHA_256", "RSA_3072")
    signature = kms.sign(KeyId=key["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA256()))


def test_import_rsa_encryption_material(kms: Any) -> None:
    key = kms.create_key(Origin="EXTERNAL", KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    # RSA private keys are too large for RSAES_OAEP: only RSA_AES_KEY_WRAP can carry them.
    assert error_code(
        kms.get_parameters_for_import,
        KeyId=key["KeyId"],
        WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_4096",
    ) in ("ValidationException", "UnsupportedOperationException")

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    import_material(kms, key["KeyId"], pkcs8(private), "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = private.public_key().encrypt(b"to the key holder", oaep)
    opened = kms.decrypt(KeyId=key["KeyId"], CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert opened["Plaintext"] == b"to the key holder"

    # Material of another spec is refused.
    wrong = kms.create_key(Origin="EXTERNAL", KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    with pytest.raises(ClientError) as info:
        import_material(kms, wrong["KeyId"], pkcs8(private), "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048")
    assert info.value.response["Error"]["Code"] == "IncorrectKeyMaterialException"


def test_expired_token_and_material_expiry(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")

    # An import token is good for 24 hours.
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    server.advance_clock(25 * HOUR)
    assert (
        error_code(
            kms.import_key_material,
            KeyId=key["KeyId"],
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        == "ExpiredImportTokenException"
    )
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"

    # Material with ValidTo is deleted by the job runner once that moment passes.
    server_now = datetime.now(UTC) + timedelta(seconds=25 * HOUR)
    material = os.urandom(32)
    forever = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    import_material(kms, forever["KeyId"], os.urandom(32))
    import_material(
        kms,
        key["KeyId"],
        material,
        ValidTo=server_now + timedelta(days=2),
        ExpirationModel="KEY_MATERIAL_EXPIRES",
    )
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"expiring")["CiphertextBlob"]

    server.advance_clock(1 * DAY)
    server.run_jobs()
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

    server.advance_clock(1 * DAY + HOUR)
    server.run_jobs()
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingImport"
    assert "ValidTo" not in described
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"
    assert error_code(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") == "KMSInvalidStateException"
    # Material that never expires is untouched.
    assert kms.describe_key(KeyId=forever["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

    # Reimporting the same material brings the key and its ciphertexts back.
    import_material(kms, key["KeyId"], material)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"expiring"


def test_delete_imported_key_material_of_a_key_pending_deletion(kms: Any) -> None:
    # AWS: allowed, and the key stays PendingDeletion.
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    import_material(kms, key["KeyId"], os.urandom(32))
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert kms.delete_imported_key_material(KeyId=key["KeyId"])["KeyId"] == key["Arn"]
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert "DeletionDate" in described
