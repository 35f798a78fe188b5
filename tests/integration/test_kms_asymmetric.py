"""Asymmetric and MAC keys through boto3 against a real server: Sign/Verify with every signing
algorithm of every key spec (checked locally against GetPublicKey), RSAES-OAEP encryption,
DeriveSharedSecret (ECDH), GenerateMac/VerifyMac and GetPublicKey.

Local checks use pyca/cryptography and Python's hmac. Imported key material (BYOK) supplies the
private halves a local check needs. Secrets are compared with ``same`` so failures never print them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from tests.support.errors import expect_error
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

RSA_SPECS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
ECC_SPECS = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
RSA_SIGNING = [
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
]
ECC_SIGNING = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
}
SIGNING_CASES = [(spec, algorithm) for spec in RSA_SPECS for algorithm in RSA_SIGNING] + list(
    ECC_SIGNING.items()
)
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "SHA_256": hashes.SHA256,
    "SHA_384": hashes.SHA384,
    "SHA_512": hashes.SHA512,
}
MAC_SPECS = {
    "HMAC_224": ("HMAC_SHA_224", "sha224", 28),
    "HMAC_256": ("HMAC_SHA_256", "sha256", 32),
    "HMAC_384": ("HMAC_SHA_384", "sha384", 48),
    "HMAC_512": ("HMAC_SHA_512", "sha512", 64),
}
OAEP_MAX = {  # RFC 8017: k - 2*hLen - 2, the sizes AWS documents
    ("RSA_2048", "RSAES_OAEP_SHA_1"): 214,
    ("RSA_2048", "RSAES_OAEP_SHA_256"): 190,
    ("RSA_3072", "RSAES_OAEP_SHA_1"): 342,
    ("RSA_3072", "RSAES_OAEP_SHA_256"): 318,
    ("RSA_4096", "RSAES_OAEP_SHA_1"): 470,
    ("RSA_4096", "RSAES_OAEP_SHA_256"): 446,
}


def same(a: bytes, b: bytes) -> bool:
    """Compare secret bytes without letting pytest print them on failure."""
    return hmac.compare_digest(a, b)


def hash_of(algorithm: str) -> hashes.HashAlgorithm:
    return HASHES[algorithm[-7:]]()


def oaep(algorithm: str) -> padding.OAEP:
    chosen: hashes.HashAlgorithm = hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(chosen), algorithm=chosen, label=None)


def verify_locally(
    public: PublicKeyTypes, algorithm: str, signature: bytes, data: bytes, digest: bool
) -> None:
    """Raise InvalidSignature unless ``signature`` is a valid AWS-style signature over ``data``."""
    chosen = hash_of(algorithm)
    prehashed: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(chosen) if digest else chosen
    if algorithm.startswith("RSASSA_PSS"):
        assert isinstance(public, rsa.RSAPublicKey)
        # AWS KMS uses a salt as long as the digest; OpenSSL checks the salt length exactly.
        pss = padding.PSS(mgf=padding.MGF1(hash_of(algorithm)), salt_length=chosen.digest_size)
        public.verify(signature, data, pss, prehashed)
    elif algorithm.startswith("RSASSA_PKCS1"):
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, data, padding.PKCS1v15(), prehashed)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, data, ec.ECDSA(prehashed))


@pytest.fixture(scope="module")
def client(server: KhoaServer) -> Any:
    return server.client("kms")


@pytest.fixture(scope="module")
def key_for(client: Any) -> Iterator[Callable[[str, str], dict[str, Any]]]:
    """One key per (KeySpec, KeyUsage) for the whole module: RSA_4096 keys are slow to make."""
    made: dict[tuple[str, str], dict[str, Any]] = {}

    def get(spec: str, usage: str) -> dict[str, Any]:
        if (spec, usage) not in made:
            made[(spec, usage)] = client.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        return made[(spec, usage)]

    yield get


def public_key_of(client: Any, key_id: str) -> PublicKeyTypes:
    return serialization.load_der_public_key(client.get_public_key(KeyId=key_id)["PublicKey"])


def import_material(client: Any, key_id: str, material: bytes, *, wrap_with_aes: bool) -> None:
    """BYOK: wrap ``material`` for the key's import parameters and import it, never expiring."""
    algorithm = "RSA_AES_KEY_WRAP_SHA_256" if wrap_with_aes else "RSAES_OAEP_SHA_256"
    params = client.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
    )
    wrapping = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(wrapping, rsa.RSAPublicKey)
    if wrap_with_aes:
        aes_key = os.urandom(32)
        wrapped = wrapping.encrypt(aes_key, oaep("RSAES_OAEP_SHA_256")) + aes_key_wrap_with_padding(
            aes_key, material
        )
    else:
        wrapped = wrapping.encrypt(material, oaep("RSAES_OAEP_SHA_256"))
    client.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def pkcs8(private: Any) -> bytes:
    der: bytes = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


# -- GetPublicKey --------------------------------------------------------------------------------

ASYMMETRIC_TYPES = (
    [(spec, "ENCRYPT_DECRYPT") for spec in RSA_SPECS]
    + [(spec, "SIGN_VERIFY") for spec in RSA_SPECS]
    + [(spec, "SIGN_VERIFY") for spec in ECC_SPECS]
    + [(spec, "KEY_AGREEMENT") for spec in ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521")]
)


@pytest.mark.parametrize(("spec", "usage"), ASYMMETRIC_TYPES, ids=[f"{s}-{u}" for s, u in ASYMMETRIC_TYPES])
def test_get_public_key(
    client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str, usage: str
) -> None:
    key = key_for(spec, usage)
    response = client.get_public_key(KeyId=key["KeyId"])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == key["Arn"]
    assert response["KeySpec"] == response["CustomerMasterKeySpec"] == spec
    assert response["KeyUsage"] == usage
    for field in ("EncryptionAlgorithms", "SigningAlgorithms", "KeyAgreementAlgorithms", "MacAlgorithms"):
        assert response.get(field) == key.get(field), field
    public = serialization.load_der_public_key(response["PublicKey"])
    if spec in RSA_SPECS:
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == RSA_SPECS[spec]
        assert public.public_numbers().e == 65537
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ECC_SPECS[spec])
    # The DER is a SubjectPublicKeyInfo, byte for byte as re-encoded.
    assert (
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == response["PublicKey"]
    )
    assert client.get_public_key(KeyId=key["Arn"])["PublicKey"] == response["PublicKey"]


def test_get_public_key_by_alias(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    alias = f"alias/asym-{uuid.uuid4().hex[:12]}"
    client.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    expected = client.get_public_key(KeyId=key["KeyId"])["PublicKey"]
    assert client.get_public_key(KeyId=alias)["PublicKey"] == expected
    assert client.get_public_key(KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}")["PublicKey"] == expected


def test_get_public_key_of_symmetric_and_hmac_keys(client: Any) -> None:
    symmetric = client.create_key()["KeyMetadata"]
    mac = client.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    expect_error("UnsupportedOperationException", client.get_public_key, KeyId=symmetric["KeyId"])
    expect_error("UnsupportedOperationException", client.get_public_key, KeyId=mac["Arn"])
    expect_error("NotFoundException", client.get_public_key, KeyId=str(uuid.uuid4()))


# -- Sign / Verify -------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "algorithm"), SIGNING_CASES, ids=[f"{s}-{a}" for s, a in SIGNING_CASES])
def test_sign_and_verify(
    client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str, algorithm: str
) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    public = public_key_of(client, key["KeyId"])
    message = f"message signed by {spec} with {algorithm}".encode()
    digester = hashlib.new(hash_of(algorithm).name, message)
    digest = digester.digest()

    raw = client.sign(KeyId=key["KeyId"], Message=message, MessageType="RAW", SigningAlgorithm=algorithm)
    assert raw["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert raw["KeyId"] == key["Arn"]
    assert raw["SigningAlgorithm"] == algorithm
    if spec in RSA_SPECS:
        assert len(raw["Signature"]) == RSA_SPECS[spec] // 8
    verify_locally(public, algorithm, raw["Signature"], message, digest=False)
    verify_locally(public, algorithm, raw["Signature"], digest, digest=True)

    prehashed = client.sign(
        KeyId=key["Arn"], Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm
    )
    verify_locally(public, algorithm, prehashed["Signature"], message, digest=False)
    default_type = client.sign(KeyId=key["KeyId"], Message=message, SigningAlgorithm=algorithm)
    verify_locally(public, algorithm, default_type["Signature"], message, digest=False)

    for signature in (raw["Signature"], prehashed["Signature"]):
        verified = client.verify(
            KeyId=key["KeyId"],
            Message=message,
            MessageType="RAW",
            Signature=signature,
            SigningAlgorithm=algorithm,
        )
        assert verified["SignatureValid"] is True
        assert verified["KeyId"] == key["Arn"]
        assert verified["SigningAlgorithm"] == algorithm
        assert client.verify(
            KeyId=key["Arn"],
            Message=digest,
            MessageType="DIGEST",
            Signature=signature,
            SigningAlgorithm=algorithm,
        )["SignatureValid"]

    # A signature over something else, or a damaged one, does not verify.
    error = expect_error(
        "KMSInvalidSignatureException",
        client.verify,
        KeyId=key["KeyId"],
        Message=message + b"!",
        Signature=raw["Signature"],
        SigningAlgorithm=algorithm,
    )
    assert error["Message"] == ""
    damaged = bytearray(raw["Signature"])
    damaged[len(damaged) // 2] ^= 0x04
    expect_error(
        "KMSInvalidSignatureException",
        client.verify,
        KeyId=key["KeyId"],
        Message=message,
        Signature=bytes(damaged),
        SigningAlgorithm=algorithm,
    )
    expect_error(
        "KMSInvalidSignatureException",
        client.verify,
        KeyId=key["KeyId"],
        Message=message,
        Signature=b"\x00" * 8,
        SigningAlgorithm=algorithm,
    )

    # A digest of the wrong length is refused, signing and verifying.
    for wrong in (digest[:-1], digest + b"\x00", hashlib.sha1(message).digest()):
        error = expect_error(
            "ValidationException",
            client.sign,
            KeyId=key["KeyId"],
            Message=wrong,
            MessageType="DIGEST",
            SigningAlgorithm=algorithm,
        )
        assert error["Message"] == f"Digest is invalid length for algorithm {algorithm}."
        expect_error(
            "ValidationException",
            client.verify,
            KeyId=key["KeyId"],
            Message=wrong,
            MessageType="DIGEST",
            Signature=raw["Signature"],
            SigningAlgorithm=algorithm,
        )


def test_pss_signatures_use_a_digest_length_salt(
    client: Any, key_for: Callable[[str, str], dict[str, Any]]
) -> None:
    key = key_for("RSA_2048", "SIGN_VERIFY")
    public = public_key_of(client, key["KeyId"])
    assert isinstance(public, rsa.RSAPublicKey)
    message = b"salt length check"
    signature = client.sign(KeyId=key["KeyId"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "Signature"
    ]
    # A verifier insisting on a different salt length rejects it.
    with pytest.raises(InvalidSignature):
        public.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20),
            hashes.SHA256(),
        )
    public.verify(
        signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )


def test_verify_a_locally_made_signature_with_imported_material(client: Any) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    key = client.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY", Origin="EXTERNAL")["KeyMetadata"]
    import_material(client, key["KeyId"], pkcs8(private), wrap_with_aes=True)
    message = b"signed outside, verified inside"
    signature = private.sign(message, ec.ECDSA(hashes.SHA384()))
    assert client.verify(
        KeyId=key["KeyId"], Message=message, Signature=signature, SigningAlgorithm="ECDSA_SHA_384"
    )["SignatureValid"]
    # And Khoa's signatures verify under the imported key's public half.
    kms_signature = client.sign(KeyId=key["KeyId"], Message=message, SigningAlgorithm="ECDSA_SHA_384")[
        "Signature"
    ]
    private.public_key().verify(kms_signature, message, ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [
        ("ECC_NIST_P256", "ECDSA_SHA_384"),
        ("ECC_NIST_P256", "ECDSA_SHA_512"),
        ("ECC_NIST_P384", "ECDSA_SHA_256"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_512"),
        ("ECC_NIST_P256", "RSASSA_PSS_SHA_256"),
        ("RSA_2048", "ECDSA_SHA_256"),
    ],
)
def test_signing_algorithm_must_suit_the_key(
    client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str, algorithm: str
) -> None:
    key = key_for(spec, "SIGN_VERIFY")
    error = expect_error(
        "InvalidKeyUsageException", client.sign, KeyId=key["KeyId"], Message=b"m", SigningAlgorithm=algorithm
    )
    assert error["Message"] == f"Algorithm {algorithm} is incompatible with key spec {spec}."
    expect_error(
        "InvalidKeyUsageException",
        client.verify,
        KeyId=key["KeyId"],
        Message=b"m",
        Signature=b"s",
        SigningAlgorithm=algorithm,
    )


def test_sign_errors(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    encryption = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    error = expect_error(
        "InvalidKeyUsageException",
        client.sign,
        KeyId=encryption["KeyId"],
        Message=b"m",
        SigningAlgorithm="RSASSA_PSS_SHA_256",
    )
    assert (
        error["Message"] == f"{encryption['Arn']} key usage is ENCRYPT_DECRYPT which is not valid for Sign."
    )
    expect_error(
        "ValidationException",
        client.sign,
        KeyId=key["KeyId"],
        Message=b"m" * 4097,
        SigningAlgorithm="ECDSA_SHA_256",
    )
    expect_error(
        "ValidationException",
        client.sign,
        KeyId=key["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_1024",
    )
    expect_error(
        "ValidationException",
        client.sign,
        KeyId=key["KeyId"],
        Message=b"m",
        MessageType="HASHED",
        SigningAlgorithm="ECDSA_SHA_256",
    )
    expect_error(
        "NotFoundException",
        client.sign,
        KeyId=str(uuid.uuid4()),
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )


# -- RSAES-OAEP encryption -----------------------------------------------------------------------

RSA_ENCRYPTION_CASES = list(OAEP_MAX)


@pytest.mark.parametrize(
    ("spec", "algorithm"), RSA_ENCRYPTION_CASES, ids=[f"{s}-{a}" for s, a in RSA_ENCRYPTION_CASES]
)
def test_rsa_encryption(
    client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str, algorithm: str
) -> None:
    key = key_for(spec, "ENCRYPT_DECRYPT")
    public = public_key_of(client, key["KeyId"])
    assert isinstance(public, rsa.RSAPublicKey)
    limit = OAEP_MAX[(spec, algorithm)]
    modulus_bytes = RSA_SPECS[spec] // 8

    # Encrypted locally with the public key, decrypted by Khoa.
    plaintext = os.urandom(limit)
    local = public.encrypt(plaintext, oaep(algorithm))
    out = client.decrypt(CiphertextBlob=local, KeyId=key["KeyId"], EncryptionAlgorithm=algorithm)
    assert out["KeyId"] == key["Arn"]
    assert out["EncryptionAlgorithm"] == algorithm
    assert same(out["Plaintext"], plaintext)

    # Encrypted by Khoa, decrypted by Khoa.
    encrypted = client.encrypt(KeyId=key["Arn"], Plaintext=plaintext, EncryptionAlgorithm=algorithm)
    assert encrypted["KeyId"] == key["Arn"]
    assert encrypted["EncryptionAlgorithm"] == algorithm
    assert len(encrypted["CiphertextBlob"]) == modulus_bytes
    out = client.decrypt(
        CiphertextBlob=encrypted["CiphertextBlob"], KeyId=key["KeyId"], EncryptionAlgorithm=algorithm
    )
    assert same(out["Plaintext"], plaintext)

    # One byte too many.
    error = expect_error(
        "ValidationException",
        client.encrypt,
        KeyId=key["KeyId"],
        Plaintext=os.urandom(limit + 1),
        EncryptionAlgorithm=algorithm,
    )
    assert error["Message"] == (
        f"Algorithm {algorithm} and key spec {spec} cannot encrypt data larger than {limit} bytes."
    )

    # The other OAEP hash, or a damaged ciphertext, does not decrypt.
    other = "RSAES_OAEP_SHA_256" if algorithm == "RSAES_OAEP_SHA_1" else "RSAES_OAEP_SHA_1"
    expect_error(
        "InvalidCiphertextException",
        client.decrypt,
        CiphertextBlob=local,
        KeyId=key["KeyId"],
        EncryptionAlgorithm=other,
    )
    damaged = bytearray(local)
    damaged[5] ^= 0x10
    expect_error(
        "InvalidCiphertextException",
        client.decrypt,
        CiphertextBlob=bytes(damaged),
        KeyId=key["KeyId"],
        EncryptionAlgorithm=algorithm,
    )


def test_rsa_encryption_decrypts_locally_with_imported_material(client: Any) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = client.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT", Origin="EXTERNAL")["KeyMetadata"]
    import_material(client, key["KeyId"], pkcs8(private), wrap_with_aes=True)
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert client.get_public_key(KeyId=key["KeyId"])["PublicKey"] == public_der
    for algorithm in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"):
        plaintext = os.urandom(64)
        blob = client.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionAlgorithm=algorithm)[
            "CiphertextBlob"
        ]
        assert same(private.decrypt(blob, oaep(algorithm)), plaintext)


def test_rsa_encryption_errors(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("RSA_2048", "ENCRYPT_DECRYPT")
    # RSA keys need an RSAES algorithm; SYMMETRIC_DEFAULT (the default) is refused.
    expect_error("InvalidKeyUsageException", client.encrypt, KeyId=key["KeyId"], Plaintext=b"x")
    expect_error(
        "InvalidKeyUsageException",
        client.encrypt,
        KeyId=key["KeyId"],
        Plaintext=b"x",
        EncryptionAlgorithm="SYMMETRIC_DEFAULT",
    )
    signing = key_for("RSA_2048", "SIGN_VERIFY")
    expect_error(
        "InvalidKeyUsageException",
        client.encrypt,
        KeyId=signing["KeyId"],
        Plaintext=b"x",
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    blob = client.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    expect_error(
        "InvalidKeyUsageException",
        client.decrypt,
        CiphertextBlob=blob,
        KeyId=signing["KeyId"],
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    # Another RSA key of the same size cannot open it.
    other = client.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    expect_error(
        "InvalidCiphertextException",
        client.decrypt,
        CiphertextBlob=blob,
        KeyId=other["KeyId"],
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )


# -- DeriveSharedSecret --------------------------------------------------------------------------

AGREEMENT_SPECS = {"ECC_NIST_P256": 32, "ECC_NIST_P384": 48, "ECC_NIST_P521": 66}


@pytest.mark.parametrize("spec", list(AGREEMENT_SPECS))
def test_derive_shared_secret(client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str) -> None:
    key = key_for(spec, "KEY_AGREEMENT")
    kms_public = public_key_of(client, key["KeyId"])
    assert isinstance(kms_public, ec.EllipticCurvePublicKey)
    local = ec.generate_private_key(ECC_SPECS[spec]())
    local_public = local.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    response = client.derive_shared_secret(
        KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=local_public
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == key["Arn"]
    assert response["KeyAgreementAlgorithm"] == "ECDH"
    assert response["KeyOrigin"] == "AWS_KMS"
    assert len(response["SharedSecret"]) == AGREEMENT_SPECS[spec]
    assert same(response["SharedSecret"], local.exchange(ec.ECDH(), kms_public))


def test_two_kms_keys_agree(client: Any) -> None:
    first = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    second = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    first_public = client.get_public_key(KeyId=first["KeyId"])["PublicKey"]
    second_public = client.get_public_key(KeyId=second["KeyId"])["PublicKey"]
    one = client.derive_shared_secret(
        KeyId=first["Arn"], KeyAgreementAlgorithm="ECDH", PublicKey=second_public
    )
    two = client.derive_shared_secret(
        KeyId=second["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=first_public
    )
    assert same(one["SharedSecret"], two["SharedSecret"])


def test_derive_shared_secret_errors(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("ECC_NIST_P256", "KEY_AGREEMENT")

    def public_der(private: Any) -> bytes:
        der: bytes = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der

    good = public_der(ec.generate_private_key(ec.SECP256R1()))
    for bad in (
        public_der(ec.generate_private_key(ec.SECP384R1())),
        public_der(ec.generate_private_key(ec.SECP256K1())),
        public_der(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        b"InvalidPublicKey",
        good[:-4],
    ):
        expect_error(
            "ValidationException",
            client.derive_shared_secret,
            KeyId=key["KeyId"],
            KeyAgreementAlgorithm="ECDH",
            PublicKey=bad,
        )
    expect_error(
        "ValidationException",
        client.derive_shared_secret,
        KeyId=key["KeyId"],
        KeyAgreementAlgorithm="INVALID",
        PublicKey=good,
    )
    signing = key_for("ECC_NIST_P256", "SIGN_VERIFY")
    error = expect_error(
        "InvalidKeyUsageException",
        client.derive_shared_secret,
        KeyId=signing["KeyId"],
        KeyAgreementAlgorithm="ECDH",
        PublicKey=good,
    )
    assert (
        error["Message"]
        == f"{signing['Arn']} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret."
    )
    expect_error(
        "NotFoundException",
        client.derive_shared_secret,
        KeyId=str(uuid.uuid4()),
        KeyAgreementAlgorithm="ECDH",
        PublicKey=good,
    )


def test_key_agreement_keys_only_agree(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("ECC_NIST_P256", "KEY_AGREEMENT")
    expect_error(
        "InvalidKeyUsageException",
        client.sign,
        KeyId=key["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )
    expect_error("InvalidKeyUsageException", client.encrypt, KeyId=key["KeyId"], Plaintext=b"m")


# -- GenerateMac / VerifyMac ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", list(MAC_SPECS))
def test_generate_and_verify_mac(
    client: Any, key_for: Callable[[str, str], dict[str, Any]], spec: str
) -> None:
    algorithm, _, size = MAC_SPECS[spec]
    key = key_for(spec, "GENERATE_VERIFY_MAC")
    message = f"authenticated by {spec}".encode()
    response = client.generate_mac(KeyId=key["KeyId"], Message=message, MacAlgorithm=algorithm)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == key["Arn"]
    assert response["MacAlgorithm"] == algorithm
    mac = response["Mac"]
    assert len(mac) == size
    # HMAC is deterministic.
    assert client.generate_mac(KeyId=key["Arn"], Message=message, MacAlgorithm=algorithm)["Mac"] == mac

    verified = client.verify_mac(KeyId=key["KeyId"], Message=message, MacAlgorithm=algorithm, Mac=mac)
    assert verified["MacValid"] is True
    assert verified["KeyId"] == key["Arn"]
    assert verified["MacAlgorithm"] == algorithm

    damaged = bytearray(mac)
    damaged[0] ^= 0x01
    for wrong_mac, wrong_message in ((bytes(damaged), message), (mac[:-1], message), (mac, message + b".")):
        error = expect_error(
            "KMSInvalidMacException",
            client.verify_mac,
            KeyId=key["KeyId"],
            Message=wrong_message,
            MacAlgorithm=algorithm,
            Mac=wrong_mac,
        )
        assert error["Message"] == ""

    for other_spec, (other, _, _) in MAC_SPECS.items():
        if other_spec == spec:
            continue
        error = expect_error(
            "InvalidKeyUsageException",
            client.generate_mac,
            KeyId=key["KeyId"],
            Message=message,
            MacAlgorithm=other,
        )
        assert error["Message"] == f"Algorithm {other} is incompatible with key spec {spec}."
        expect_error(
            "InvalidKeyUsageException",
            client.verify_mac,
            KeyId=key["KeyId"],
            Message=message,
            MacAlgorithm=other,
            Mac=mac,
        )


@pytest.mark.parametrize("spec", list(MAC_SPECS))
def test_mac_matches_python_hmac(client: Any, spec: str) -> None:
    algorithm, hash_name, size = MAC_SPECS[spec]
    material = os.urandom(size)
    key = client.create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC", Origin="EXTERNAL")["KeyMetadata"]
    import_material(client, key["KeyId"], material, wrap_with_aes=False)
    for message in (b"a", b"the quick brown fox", os.urandom(4096)):
        expected = hmac.new(material, message, hash_name).digest()
        mac = client.generate_mac(KeyId=key["KeyId"], Message=message, MacAlgorithm=algorithm)["Mac"]
        assert same(mac, expected)
        assert client.verify_mac(KeyId=key["KeyId"], Message=message, MacAlgorithm=algorithm, Mac=expected)[
            "MacValid"
        ]


def test_mac_errors(client: Any, key_for: Callable[[str, str], dict[str, Any]]) -> None:
    key = key_for("HMAC_256", "GENERATE_VERIFY_MAC")
    expect_error(
        "ValidationException", client.generate_mac, KeyId=key["KeyId"], Message=b"m", MacAlgorithm="INVALID"
    )
    expect_error(
        "ValidationException",
        client.verify_mac,
        KeyId=key["KeyId"],
        Message=b"m",
        MacAlgorithm="INVALID",
        Mac=b"\x00" * 32,
    )
    expect_error(
        "ValidationException",
        client.generate_mac,
        KeyId=key["KeyId"],
        Message=b"m" * 4097,
        MacAlgorithm="HMAC_SHA_256",
    )
    error = expect_error(
        "NotFoundException", client.generate_mac, KeyId="key_id", Message=b"m", MacAlgorithm="HMAC_SHA_256"
    )
    assert error["Message"] == "Invalid keyId 'key_id'"
    expect_error(
        "NotFoundException",
        client.verify_mac,
        KeyId="key_id",
        Message=b"m",
        MacAlgorithm="HMAC_SHA_256",
        Mac=b"\x00" * 32,
    )
    # MAC keys do nothing else.
    expect_error("InvalidKeyUsageException", client.encrypt, KeyId=key["KeyId"], Plaintext=b"m")
    expect_error(
        "InvalidKeyUsageException",
        client.sign,
        KeyId=key["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )
