"""Key material generation and the asymmetric and MAC primitives KMS keys perform (via pyca/cryptography).

Private keys travel inside Khoa as PKCS#8 DER, always sealed by the barrier at rest.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA_1": hashes.SHA1,
    "SHA_224": hashes.SHA224,
    "SHA_256": hashes.SHA256,
    "SHA_384": hashes.SHA384,
    "SHA_512": hashes.SHA512,
}


class CryptoFailure(Exception):
    """An operation on untrusted input failed (bad ciphertext, bad peer key, bad material)."""


def random_bytes(count: int) -> bytes:
    return os.urandom(count)


def generate_rsa(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _pkcs8(key)


def generate_ec(curve: str) -> bytes:
    key = ec.generate_private_key(_CURVES[curve]())
    return _pkcs8(key)


def _pkcs8(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private(der: bytes) -> PrivateKeyTypes:
    """Parse and fully validate a PKCS#8 private key (for material that arrives from outside)."""
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoFailure("not a PKCS#8 private key") from exc


def _held(der: bytes) -> PrivateKeyTypes:
    """Parse a private key Khoa holds: one it generated, or imported after ``load_private`` checked it.

    Such material is authenticated by the barrier, so OpenSSL's RSA consistency check is skipped: it
    costs ~30 ms for RSA_2048 and ~200 ms for RSA_4096 on every Sign, Verify and Decrypt.
    """
    try:
        return serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as exc:
        raise CryptoFailure("not a PKCS#8 private key") from exc


def public_key_der(private_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo GetPublicKey returns."""
    key = _held(private_der)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe_private(der: bytes) -> str:
    """The KMS key spec a PKCS#8 private key corresponds to (used to check imported material)."""
    key = load_private(der)
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA_{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {
            "secp256r1": "ECC_NIST_P256",
            "secp384r1": "ECC_NIST_P384",
            "secp521r1": "ECC_NIST_P521",
            "secp256k1": "ECC_SECG_P256K1",
        }
        return names.get(key.curve.name, key.curve.name)
    return "UNSUPPORTED"


def _hash_for(signing_algorithm: str) -> hashes.HashAlgorithm:
    return _HASHES[signing_algorithm[-7:]]()


def digest_size(signing_algorithm: str) -> int:
    return _hash_for(signing_algorithm).digest_size


def sign(private_der: bytes, algorithm: str, message: bytes, is_digest: bool) -> bytes:
    """Sign with an RSASSA-PSS (salt length = digest length, as AWS KMS), PKCS#1 v1.5 or ECDSA algorithm."""
    key = _held(private_der)
    chosen = _hash_for(algorithm)
    prehashed: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(chosen) if is_digest else chosen
    if algorithm.startswith("RSASSA_PSS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        pss = padding.PSS(mgf=padding.MGF1(_hash_for(algorithm)), salt_length=chosen.digest_size)
        return key.sign(message, pss, prehashed)
    if algorithm.startswith("RSASSA_PKCS1"):
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(message, padding.PKCS1v15(), prehashed)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(message, ec.ECDSA(prehashed))


def verify(private_der: bytes, algorithm: str, message: bytes, is_digest: bool, signature: bytes) -> bool:
    public = _held(private_der).public_key()
    chosen = _hash_for(algorithm)
    prehashed: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(chosen) if is_digest else chosen
    try:
        if algorithm.startswith("RSASSA_PSS"):
            assert isinstance(public, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(_hash_for(algorithm)), salt_length=chosen.digest_size)
            public.verify(signature, message, pss, prehashed)
        elif algorithm.startswith("RSASSA_PKCS1"):
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(signature, message, padding.PKCS1v15(), prehashed)
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(signature, message, ec.ECDSA(prehashed))
    except (InvalidSignature, ValueError):
        return False
    return True


def _oaep(algorithm: str) -> padding.OAEP:
    # KMS offers RSAES_OAEP_SHA_1 for compatibility; SHA-1 is safe inside OAEP's construction.
    sha1 = algorithm == "RSAES_OAEP_SHA_1"
    chosen: hashes.HashAlgorithm = hashes.SHA1() if sha1 else hashes.SHA256()  # noqa: S303
    return padding.OAEP(mgf=padding.MGF1(chosen), algorithm=chosen, label=None)


def rsa_encrypt(private_der: bytes, algorithm: str, plaintext: bytes) -> bytes:
    key = _held(private_der)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().encrypt(plaintext, _oaep(algorithm))


def rsa_decrypt(private_der: bytes, algorithm: str, ciphertext: bytes) -> bytes:
    key = _held(private_der)
    assert isinstance(key, rsa.RSAPrivateKey)
    try:
        return key.decrypt(ciphertext, _oaep(algorithm))
    except ValueError as exc:
        raise CryptoFailure("RSA decryption failed") from exc


def ecdh(private_der: bytes, peer_public_der: bytes) -> bytes:
    key = _held(private_der)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    try:
        peer = serialization.load_der_public_key(peer_public_der)
    except (ValueError, TypeError) as exc:
        raise CryptoFailure("the peer public key is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != key.curve.name:
        raise CryptoFailure("the peer public key is not on the key's curve")
    return key.exchange(ec.ECDH(), peer)


def hmac_digest(key: bytes, mac_algorithm: str, message: bytes) -> bytes:
    name = {
        "HMAC_SHA_224": "sha224",
        "HMAC_SHA_256": "sha256",
        "HMAC_SHA_384": "sha384",
        "HMAC_SHA_512": "sha512",
    }[mac_algorithm]
    return hmac.new(key, message, getattr(hashlib, name)).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def generate_ed25519() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return _pkcs8(ed25519.Ed25519PrivateKey.generate())


def rsa_modulus_bytes(private_der: bytes) -> int:
    key = _held(private_der)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.key_size // 8
