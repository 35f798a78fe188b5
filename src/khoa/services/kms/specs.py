"""What each KMS key spec is and what it may be used for, as listed in the AWS KMS developer guide."""

from __future__ import annotations

SYMMETRIC = "SYMMETRIC_DEFAULT"

RSA_SPECS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
ECC_SPECS = {
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}
HMAC_SPECS = {"HMAC_224": 28, "HMAC_256": 32, "HMAC_384": 48, "HMAC_512": 64}

ALLOWED_USAGES: dict[str, tuple[str, ...]] = {
    SYMMETRIC: ("ENCRYPT_DECRYPT",),
    **{spec: ("ENCRYPT_DECRYPT", "SIGN_VERIFY") for spec in RSA_SPECS},
    "ECC_NIST_P256": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_NIST_P384": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_NIST_P521": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_SECG_P256K1": ("SIGN_VERIFY",),
    **{spec: ("GENERATE_VERIFY_MAC",) for spec in HMAC_SPECS},
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
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
}
RSA_ENCRYPTION = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
MAC_ALGORITHMS = {
    "HMAC_224": ["HMAC_SHA_224"],
    "HMAC_256": ["HMAC_SHA_256"],
    "HMAC_384": ["HMAC_SHA_384"],
    "HMAC_512": ["HMAC_SHA_512"],
}


def is_asymmetric(spec: str) -> bool:
    return spec in RSA_SPECS or spec in ECC_SPECS


def algorithms(spec: str, usage: str) -> dict[str, list[str]]:
    """The algorithm lists DescribeKey and GetPublicKey report for a key."""
    if spec == SYMMETRIC:
        return {"EncryptionAlgorithms": [SYMMETRIC]}
    if spec in HMAC_SPECS:
        return {"MacAlgorithms": list(MAC_ALGORITHMS[spec])}
    if usage == "ENCRYPT_DECRYPT":
        return {"EncryptionAlgorithms": list(RSA_ENCRYPTION)}
    if usage == "KEY_AGREEMENT":
        return {"KeyAgreementAlgorithms": ["ECDH"]}
    if spec in RSA_SPECS:
        return {"SigningAlgorithms": list(RSA_SIGNING)}
    return {"SigningAlgorithms": list(ECC_SIGNING[spec])}


def rsa_max_plaintext(spec: str, algorithm: str) -> int:
    """Largest plaintext RSAES-OAEP can take for this modulus and hash (RFC 8017: k - 2*hLen - 2)."""
    modulus_bytes = RSA_SPECS[spec] // 8
    hash_len = 20 if algorithm == "RSAES_OAEP_SHA_1" else 32
    return modulus_bytes - 2 * hash_len - 2
