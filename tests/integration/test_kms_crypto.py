"""Symmetric cryptography through boto3 against a real server: Encrypt, Decrypt, ReEncrypt,
encryption contexts, ciphertext tampering, data keys and data key pairs, GenerateRandom, and the
InvalidKeyUsageException every operation returns for a key of the wrong kind.

Secrets (data keys, private keys) are compared with ``same`` so a failure never prints them.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from tests.support.errors import expect_error
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def same(a: bytes, b: bytes) -> bool:
    """Compare secret bytes without letting pytest print them on failure."""
    return hmac.compare_digest(a, b)


@pytest.fixture(scope="module")
def client(server: KhoaServer) -> Any:
    return server.client("kms")


@pytest.fixture(scope="module")
def keys(client: Any) -> dict[str, dict[str, Any]]:
    """One key of each kind, shared by the tests that only read them."""

    def make(**kwargs: Any) -> dict[str, Any]:
        meta: dict[str, Any] = client.create_key(**kwargs)["KeyMetadata"]
        return meta

    made = {
        "a": make(Description="crypto a"),
        "b": make(Description="crypto b"),
        "rsa_encrypt": make(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"),
        "rsa_sign": make(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
        "ecc_sign": make(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"),
        "ecc_agree": make(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"),
        "hmac": make(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
    }
    alias = f"alias/crypto-{uuid.uuid4().hex[:12]}"
    client.create_alias(AliasName=alias, TargetKeyId=made["a"]["KeyId"])
    made["a"]["Alias"] = alias
    made["a"]["AliasArn"] = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"
    return made


# -- Encrypt / Decrypt ---------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["KeyId", "Arn", "Alias", "AliasArn"])
def test_encrypt_decrypt_with_every_identifier(
    client: Any, keys: dict[str, dict[str, Any]], ref: str
) -> None:
    key = keys["a"]
    encrypted = client.encrypt(KeyId=key[ref], Plaintext=b"hello khoa")
    assert encrypted["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert encrypted["KeyId"] == key["Arn"]
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = encrypted["CiphertextBlob"]
    assert b"hello khoa" not in blob

    decrypted = client.decrypt(CiphertextBlob=blob)
    assert decrypted["Plaintext"] == b"hello khoa"
    assert decrypted["KeyId"] == key["Arn"]
    assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert client.decrypt(CiphertextBlob=blob, KeyId=key[ref])["Plaintext"] == b"hello khoa"
    assert (
        client.decrypt(CiphertextBlob=blob, KeyId=key[ref], EncryptionAlgorithm="SYMMETRIC_DEFAULT")[
            "Plaintext"
        ]
        == b"hello khoa"
    )


def test_encryption_is_randomised(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    first = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    second = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"same")["CiphertextBlob"]
    assert first != second


@pytest.mark.parametrize("size", [1, 4096])
def test_plaintext_size_limits(client: Any, keys: dict[str, dict[str, Any]], size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=plaintext)["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext


def test_oversized_plaintext(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    error = expect_error(
        "ValidationException", client.encrypt, KeyId=keys["a"]["KeyId"], Plaintext=b"x" * 4097
    )
    assert error["Message"] == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )


def test_empty_plaintext(server: KhoaServer, keys: dict[str, dict[str, Any]]) -> None:
    raw = server.client("kms", validate=False)
    expect_error("ValidationException", raw.encrypt, KeyId=keys["a"]["KeyId"], Plaintext=b"")


def test_decrypt_with_the_wrong_key_id(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"for a")["CiphertextBlob"]
    for wrong in (keys["b"]["KeyId"], keys["b"]["Arn"], keys["hmac"]["KeyId"], keys["rsa_sign"]["KeyId"]):
        error = expect_error("IncorrectKeyException", client.decrypt, CiphertextBlob=blob, KeyId=wrong)
        assert error["Message"] == (
            "The key ID in the request does not identify a CMK that can perform this operation."
        )
    expect_error("NotFoundException", client.decrypt, CiphertextBlob=blob, KeyId=str(uuid.uuid4()))
    expect_error("NotFoundException", client.decrypt, CiphertextBlob=blob, KeyId="alias/no-such-alias-here")


def test_encrypt_with_unknown_key(server: KhoaServer, client: Any) -> None:
    missing = str(uuid.uuid4())
    error = expect_error("NotFoundException", client.encrypt, KeyId=missing, Plaintext=b"x")
    assert error["Message"] == f"Key 'arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{missing}' does not exist"
    expect_error("NotFoundException", client.encrypt, KeyId="alias/no-such-alias-here", Plaintext=b"x")
    expect_error(
        "ValidationException", server.client("kms", validate=False).encrypt, KeyId="", Plaintext=b"x"
    )


def test_encrypt_algorithm_must_suit_the_key(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    for algorithm in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"):
        expect_error(
            "InvalidKeyUsageException",
            client.encrypt,
            KeyId=keys["a"]["KeyId"],
            Plaintext=b"x",
            EncryptionAlgorithm=algorithm,
        )
    expect_error(
        "ValidationException",
        client.encrypt,
        KeyId=keys["a"]["KeyId"],
        Plaintext=b"x",
        EncryptionAlgorithm="AES_GCM",
    )


# -- encryption context --------------------------------------------------------------------------


def test_encryption_context_binds_the_ciphertext(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    context = {"purpose": "test", "tenant": "t-42", "unicode": "khóa 🔑"}
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"bound", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    reordered = dict(reversed(list(context.items())))
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"bound"

    wrong_contexts: list[dict[str, str] | None] = [
        None,
        {},
        {"purpose": "test", "tenant": "t-42"},
        {**context, "extra": "pair"},
        {**context, "tenant": "t-43"},
        {"Purpose": "test", "tenant": "t-42", "unicode": "khóa 🔑"},
    ]
    for wrong in wrong_contexts:
        kwargs: dict[str, Any] = {"CiphertextBlob": blob}
        if wrong is not None:
            kwargs["EncryptionContext"] = wrong
        error = expect_error("InvalidCiphertextException", client.decrypt, **kwargs)
        assert error["Message"] == ""


def test_context_on_decrypt_only_is_refused(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"no context")["CiphertextBlob"]
    expect_error(
        "InvalidCiphertextException", client.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "b"}
    )


def test_context_pairs_are_not_confused(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"x", EncryptionContext={"ab": "c"})[
        "CiphertextBlob"
    ]
    expect_error(
        "InvalidCiphertextException", client.decrypt, CiphertextBlob=blob, EncryptionContext={"a": "bc"}
    )


# -- tampering -----------------------------------------------------------------------------------


def test_every_tampered_byte_is_refused(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    context = {"k": "v"}
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"tamper-evident", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    assert client.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"tamper-evident"
    for position in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            expect_error(
                "InvalidCiphertextException",
                client.decrypt,
                CiphertextBlob=bytes(tampered),
                EncryptionContext=context,
            )
            if mask == 0x01:
                # Naming the key does not help a corrupted blob either.
                expect_error(
                    "InvalidCiphertextException",
                    client.decrypt,
                    CiphertextBlob=bytes(tampered),
                    KeyId=keys["a"]["KeyId"],
                    EncryptionContext=context,
                )


def test_truncated_extended_and_garbage_blobs(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    blob = client.encrypt(KeyId=keys["a"]["KeyId"], Plaintext=b"whole")["CiphertextBlob"]
    candidates = [blob[:n] for n in (1, 16, 17, 48, 49, 60, 61, len(blob) - 16, len(blob) - 1)]
    candidates += [blob + b"\x00", blob + blob, b"\x00" * len(blob), uuid.uuid4().bytes * 6]
    for candidate in candidates:
        expect_error("InvalidCiphertextException", client.decrypt, CiphertextBlob=candidate)


def test_ciphertext_too_long_for_the_model(client: Any) -> None:
    expect_error("ValidationException", client.decrypt, CiphertextBlob=b"\x01" * 6145)


# -- ReEncrypt -----------------------------------------------------------------------------------


def test_re_encrypt_between_keys_with_context_change(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    a, b = keys["a"], keys["b"]
    blob = client.encrypt(KeyId=a["KeyId"], Plaintext=b"moving", EncryptionContext={"stage": "one"})[
        "CiphertextBlob"
    ]
    moved = client.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"stage": "one"},
        DestinationKeyId=b["Arn"],
        DestinationEncryptionContext={"stage": "two"},
    )
    assert moved["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert moved["SourceKeyId"] == a["Arn"]
    assert moved["KeyId"] == b["Arn"]
    assert moved["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    new_blob = moved["CiphertextBlob"]
    out = client.decrypt(CiphertextBlob=new_blob, EncryptionContext={"stage": "two"})
    assert out["Plaintext"] == b"moving"
    assert out["KeyId"] == b["Arn"]
    expect_error(
        "InvalidCiphertextException",
        client.decrypt,
        CiphertextBlob=new_blob,
        EncryptionContext={"stage": "one"},
    )
    expect_error("InvalidCiphertextException", client.decrypt, CiphertextBlob=new_blob)
    expect_error("IncorrectKeyException", client.decrypt, CiphertextBlob=new_blob, KeyId=a["KeyId"])


def test_re_encrypt_same_key_changes_only_the_context(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    a = keys["a"]
    blob = client.encrypt(KeyId=a["KeyId"], Plaintext=b"ctx")["CiphertextBlob"]
    moved = client.re_encrypt(
        CiphertextBlob=blob,
        SourceKeyId=a["Arn"],
        DestinationKeyId=a["AliasArn"],
        DestinationEncryptionContext={"new": "context"},
    )
    assert moved["SourceKeyId"] == moved["KeyId"] == a["Arn"]
    assert (
        client.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"new": "context"})[
            "Plaintext"
        ]
        == b"ctx"
    )


def test_re_encrypt_errors(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    a, b = keys["a"], keys["b"]
    blob = client.encrypt(KeyId=a["KeyId"], Plaintext=b"x", EncryptionContext={"c": "1"})["CiphertextBlob"]
    expect_error(
        "InvalidCiphertextException", client.re_encrypt, CiphertextBlob=blob, DestinationKeyId=b["KeyId"]
    )
    expect_error(
        "InvalidCiphertextException",
        client.re_encrypt,
        CiphertextBlob=blob,
        SourceEncryptionContext={"c": "2"},
        DestinationKeyId=b["KeyId"],
    )
    expect_error(
        "IncorrectKeyException",
        client.re_encrypt,
        CiphertextBlob=blob,
        SourceKeyId=b["KeyId"],
        SourceEncryptionContext={"c": "1"},
        DestinationKeyId=b["KeyId"],
    )
    expect_error(
        "NotFoundException",
        client.re_encrypt,
        CiphertextBlob=blob,
        SourceEncryptionContext={"c": "1"},
        DestinationKeyId=str(uuid.uuid4()),
    )
    for wrong in ("hmac", "rsa_sign", "ecc_agree"):
        expect_error(
            "InvalidKeyUsageException",
            client.re_encrypt,
            CiphertextBlob=blob,
            SourceEncryptionContext={"c": "1"},
            DestinationKeyId=keys[wrong]["KeyId"],
        )
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    expect_error(
        "InvalidCiphertextException",
        client.re_encrypt,
        CiphertextBlob=bytes(tampered),
        SourceEncryptionContext={"c": "1"},
        DestinationKeyId=b["KeyId"],
    )


def test_re_encrypt_to_and_from_an_rsa_key(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    a, rsa_key = keys["a"], keys["rsa_encrypt"]
    blob = client.encrypt(KeyId=a["KeyId"], Plaintext=b"asymmetric hop")["CiphertextBlob"]
    to_rsa = client.re_encrypt(
        CiphertextBlob=blob,
        DestinationKeyId=rsa_key["KeyId"],
        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    assert to_rsa["KeyId"] == rsa_key["Arn"]
    assert to_rsa["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert len(to_rsa["CiphertextBlob"]) == 256
    assert (
        client.decrypt(
            CiphertextBlob=to_rsa["CiphertextBlob"],
            KeyId=rsa_key["KeyId"],
            EncryptionAlgorithm="RSAES_OAEP_SHA_256",
        )["Plaintext"]
        == b"asymmetric hop"
    )
    back = client.re_encrypt(
        CiphertextBlob=to_rsa["CiphertextBlob"],
        SourceKeyId=rsa_key["Arn"],
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
        DestinationKeyId=a["KeyId"],
    )
    assert back["SourceKeyId"] == rsa_key["Arn"]
    assert back["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert back["KeyId"] == a["Arn"]
    assert client.decrypt(CiphertextBlob=back["CiphertextBlob"])["Plaintext"] == b"asymmetric hop"
    # Symmetric algorithm for an RSA destination is refused.
    expect_error(
        "InvalidKeyUsageException", client.re_encrypt, CiphertextBlob=blob, DestinationKeyId=rsa_key["KeyId"]
    )


# -- GenerateDataKey -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"KeySpec": "AES_256"}, 32),
        ({"KeySpec": "AES_128"}, 16),
        ({"NumberOfBytes": 1}, 1),
        ({"NumberOfBytes": 64}, 64),
        ({"NumberOfBytes": 1024}, 1024),
    ],
)
def test_generate_data_key(
    client: Any, keys: dict[str, dict[str, Any]], kwargs: dict[str, Any], size: int
) -> None:
    a = keys["a"]
    response = client.generate_data_key(KeyId=a["Alias"], EncryptionContext={"dk": "1"}, **kwargs)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == a["Arn"]
    assert len(response["Plaintext"]) == size
    decrypted = client.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext={"dk": "1"})
    assert decrypted["KeyId"] == a["Arn"]
    assert same(decrypted["Plaintext"], response["Plaintext"])
    expect_error("InvalidCiphertextException", client.decrypt, CiphertextBlob=response["CiphertextBlob"])


def test_generate_data_key_is_random(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    first = client.generate_data_key(KeyId=keys["a"]["KeyId"], KeySpec="AES_256")["Plaintext"]
    second = client.generate_data_key(KeyId=keys["a"]["KeyId"], KeySpec="AES_256")["Plaintext"]
    assert not same(first, second)


def test_generate_data_key_size_validation(
    server: KhoaServer, client: Any, keys: dict[str, dict[str, Any]]
) -> None:
    key_id = keys["a"]["KeyId"]
    expect_error(
        "ValidationException", client.generate_data_key, KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32
    )
    expect_error("ValidationException", client.generate_data_key, KeyId=key_id)
    expect_error("ValidationException", client.generate_data_key, KeyId=key_id, NumberOfBytes=1025)
    expect_error("ValidationException", client.generate_data_key, KeyId=key_id, KeySpec="AES_512")
    expect_error(
        "ValidationException",
        server.client("kms", validate=False).generate_data_key,
        KeyId=key_id,
        NumberOfBytes=0,
    )
    expect_error(
        "ValidationException",
        client.generate_data_key_without_plaintext,
        KeyId=key_id,
        KeySpec="AES_128",
        NumberOfBytes=16,
    )
    expect_error("ValidationException", client.generate_data_key_without_plaintext, KeyId=key_id)


@pytest.mark.parametrize(("spec", "size"), [("AES_256", 32), ("AES_128", 16)])
def test_generate_data_key_without_plaintext(
    client: Any, keys: dict[str, dict[str, Any]], spec: str, size: int
) -> None:
    a = keys["a"]
    response = client.generate_data_key_without_plaintext(
        KeyId=a["Arn"], KeySpec=spec, EncryptionContext={"x": "y"}
    )
    assert "Plaintext" not in response
    assert response["KeyId"] == a["Arn"]
    decrypted = client.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext={"x": "y"})
    assert len(decrypted["Plaintext"]) == size
    response = client.generate_data_key_without_plaintext(KeyId=a["KeyId"], NumberOfBytes=48)
    assert len(client.decrypt(CiphertextBlob=response["CiphertextBlob"])["Plaintext"]) == 48


@pytest.mark.parametrize("kind", ["rsa_encrypt", "rsa_sign", "ecc_sign", "ecc_agree", "hmac"])
def test_data_keys_need_a_symmetric_encryption_key(
    client: Any, keys: dict[str, dict[str, Any]], kind: str
) -> None:
    key_id = keys[kind]["KeyId"]
    expect_error("InvalidKeyUsageException", client.generate_data_key, KeyId=key_id, KeySpec="AES_256")
    expect_error(
        "InvalidKeyUsageException",
        client.generate_data_key_without_plaintext,
        KeyId=key_id,
        KeySpec="AES_256",
    )
    expect_error(
        "InvalidKeyUsageException", client.generate_data_key_pair, KeyId=key_id, KeyPairSpec="ECC_NIST_P256"
    )
    expect_error(
        "InvalidKeyUsageException",
        client.generate_data_key_pair_without_plaintext,
        KeyId=key_id,
        KeyPairSpec="ECC_NIST_P256",
    )


def test_data_key_errors_for_unknown_keys(client: Any) -> None:
    missing = str(uuid.uuid4())
    expect_error("NotFoundException", client.generate_data_key, KeyId=missing, KeySpec="AES_256")
    expect_error(
        "NotFoundException", client.generate_data_key_without_plaintext, KeyId=missing, KeySpec="AES_256"
    )
    expect_error("NotFoundException", client.generate_data_key_pair, KeyId=missing, KeyPairSpec="RSA_2048")


# -- GenerateDataKeyPair -------------------------------------------------------------------------

PAIR_SPECS = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
]
CURVES = {
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}


def check_pair(spec: str, private_der: bytes, public_der: bytes) -> None:
    """The private key is PKCS#8 DER of the right type, and it matches the DER SPKI public key."""
    private = serialization.load_der_private_key(private_der, password=None)
    public = serialization.load_der_public_key(public_der)
    derived = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert derived == public_der
    message = b"pair check"
    if spec.startswith("RSA"):
        assert isinstance(private, rsa.RSAPrivateKey)
        assert isinstance(public, rsa.RSAPublicKey)
        assert private.key_size == int(spec.split("_")[1])
        signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    elif spec == "ECC_NIST_EDWARDS25519":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(private.sign(message), message)
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert private.curve.name == CURVES[spec]
        public.verify(private.sign(message, ec.ECDSA(hashes.SHA256())), message, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("spec", PAIR_SPECS)
def test_generate_data_key_pair(client: Any, keys: dict[str, dict[str, Any]], spec: str) -> None:
    a = keys["a"]
    context = {"pair": spec}
    response = client.generate_data_key_pair(KeyId=a["KeyId"], KeyPairSpec=spec, EncryptionContext=context)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == a["Arn"]
    assert response["KeyPairSpec"] == spec
    check_pair(spec, response["PrivateKeyPlaintext"], response["PublicKey"])
    decrypted = client.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"], EncryptionContext=context)
    assert decrypted["KeyId"] == a["Arn"]
    assert same(decrypted["Plaintext"], response["PrivateKeyPlaintext"])
    expect_error(
        "InvalidCiphertextException", client.decrypt, CiphertextBlob=response["PrivateKeyCiphertextBlob"]
    )


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P384", "ECC_SECG_P256K1"])
def test_generate_data_key_pair_without_plaintext(
    client: Any, keys: dict[str, dict[str, Any]], spec: str
) -> None:
    a = keys["a"]
    response = client.generate_data_key_pair_without_plaintext(KeyId=a["Alias"], KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in response
    assert response["KeyId"] == a["Arn"]
    assert response["KeyPairSpec"] == spec
    private = client.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"])["Plaintext"]
    check_pair(spec, private, response["PublicKey"])


def test_generate_data_key_pair_spec_validation(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    expect_error(
        "ValidationException", client.generate_data_key_pair, KeyId=keys["a"]["KeyId"], KeyPairSpec="RSA_1024"
    )
    expect_error(
        "ValidationException",
        client.generate_data_key_pair_without_plaintext,
        KeyId=keys["a"]["KeyId"],
        KeyPairSpec="HMAC_256",
    )


# -- GenerateRandom ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 16, 32, 1024])
def test_generate_random(client: Any, size: int) -> None:
    response = client.generate_random(NumberOfBytes=size)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["Plaintext"]) == size


def test_generate_random_is_random(client: Any) -> None:
    assert not same(
        client.generate_random(NumberOfBytes=32)["Plaintext"],
        client.generate_random(NumberOfBytes=32)["Plaintext"],
    )


def test_generate_random_out_of_range(server: KhoaServer, client: Any) -> None:
    error = expect_error("ValidationException", client.generate_random, NumberOfBytes=1025)
    assert error["Message"] == (
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value less than or equal to 1024"
    )
    raw = server.client("kms", validate=False)
    error = expect_error("ValidationException", raw.generate_random, NumberOfBytes=0)
    assert error["Message"] == (
        "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )
    expect_error("ValidationException", raw.generate_random, NumberOfBytes=-5)
    error = expect_error("ValidationException", client.generate_random)
    assert error["Message"] == "NumberOfBytes is required."


# -- using keys for the wrong operation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "usage"),
    [
        ("rsa_sign", "SIGN_VERIFY"),
        ("ecc_sign", "SIGN_VERIFY"),
        ("ecc_agree", "KEY_AGREEMENT"),
        ("hmac", "GENERATE_VERIFY_MAC"),
    ],
)
def test_encrypt_with_a_key_of_another_usage(
    client: Any, keys: dict[str, dict[str, Any]], kind: str, usage: str
) -> None:
    key = keys[kind]
    error = expect_error("InvalidKeyUsageException", client.encrypt, KeyId=key["KeyId"], Plaintext=b"x")
    assert error["Message"] == f"{key['Arn']} key usage is {usage} which is not valid for Encrypt."


def test_operations_refuse_keys_of_the_wrong_kind(client: Any, keys: dict[str, dict[str, Any]]) -> None:
    a = keys["a"]
    error = expect_error(
        "InvalidKeyUsageException",
        client.generate_mac,
        KeyId=a["KeyId"],
        Message=b"m",
        MacAlgorithm="HMAC_SHA_256",
    )
    assert error["Message"] == f"{a['Arn']} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac."
    expect_error(
        "InvalidKeyUsageException",
        client.verify_mac,
        KeyId=a["KeyId"],
        Message=b"m",
        MacAlgorithm="HMAC_SHA_256",
        Mac=b"\x00" * 32,
    )
    error = expect_error(
        "InvalidKeyUsageException",
        client.sign,
        KeyId=a["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert error["Message"] == f"{a['Arn']} key usage is ENCRYPT_DECRYPT which is not valid for Sign."
    expect_error(
        "InvalidKeyUsageException",
        client.verify,
        KeyId=a["KeyId"],
        Message=b"m",
        Signature=b"s",
        SigningAlgorithm="ECDSA_SHA_256",
    )
    peer = client.get_public_key(KeyId=keys["ecc_agree"]["KeyId"])["PublicKey"]
    for kind in ("a", "ecc_sign", "rsa_encrypt", "hmac"):
        expect_error(
            "InvalidKeyUsageException",
            client.derive_shared_secret,
            KeyId=keys[kind]["KeyId"],
            KeyAgreementAlgorithm="ECDH",
            PublicKey=peer,
        )
    hmac_key = keys["hmac"]
    error = expect_error(
        "InvalidKeyUsageException",
        client.sign,
        KeyId=hmac_key["KeyId"],
        Message=b"m",
        SigningAlgorithm="RSASSA_PSS_SHA_256",
    )
    assert (
        error["Message"] == f"{hmac_key['Arn']} key usage is GENERATE_VERIFY_MAC which is not valid for Sign."
    )
