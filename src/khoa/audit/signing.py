"""The trail's RSA signing keys: created on first use, sealed by the barrier, named by fingerprint.

The digest is signed SHA256withRSA (PKCS#1 v1.5) with the trail's RSA-2048 key. CloudTrail keeps that
signature in the object's ``x-amz-meta-signature`` metadata; with no S3 it is stored, hex-encoded, in a
sidecar file (see :mod:`khoa.audit.files`). Private halves are sealed bound to their row, so a key
copied to another row does not open; public halves are listed for verifiers (``khoa audit public-keys``).

A row of ``audit_trail_keys`` is no evidence by itself: whoever can write the database can add a public
key of their own. :func:`vouched_public_keys` trusts a key only when its sealed private half opens with
the root key, bound to its fingerprint, and is the private half of that very public key: only a
holder of the root key (the server) can have made such a row.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import Engine, Row, insert, select

from khoa.crypto.barrier import Barrier, BarrierError
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

KEY_BITS = 2048

_KEYS = schema.audit_trail_keys


def public_key_der(key: rsa.RSAPublicKey) -> bytes:
    """The public key as CloudTrail's ListPublicKeys returns it: DER-encoded PKCS#1 RSAPublicKey."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def fingerprint(public_der: bytes) -> str:
    """Hex MD5 of the PKCS#1 DER public key: 32 hex digits, the shape of CloudTrail's fingerprints.
    It names a key; trust comes from the full public key the verifier pinned, not from this hash."""
    return hashlib.md5(public_der, usedforsecurity=False).hexdigest()


def key_binding(key_fingerprint: str) -> str:
    return f"audit_trail_keys:{key_fingerprint}"


def sign(private_key: rsa.RSAPrivateKey, data: bytes) -> str:
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()).hex()


@dataclass(frozen=True)
class SigningKey:
    fingerprint: str
    private_key: rsa.RSAPrivateKey


class SigningKeys:
    """The trail keys stored in ``audit_trail_keys``."""

    def __init__(self, engine: Engine, barrier: Barrier) -> None:
        self.engine = engine
        self.barrier = barrier

    def signing_key(self, now: float) -> SigningKey:
        """The current trail key, created (and sealed, bound to its row) on first use."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_KEYS)
                .where(_KEYS.c.valid_to.is_(None))
                .order_by(_KEYS.c.valid_from.desc(), _KEYS.c.fingerprint)
                .limit(1)
            ).first()
        if row is None:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            der = public_key_der(private_key.public_key())
            key_id = fingerprint(der)
            pkcs8 = private_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            with self.engine.begin() as conn:
                conn.execute(
                    insert(_KEYS).values(
                        fingerprint=key_id,
                        public_key=der,
                        private_key_sealed=self.barrier.seal(pkcs8, key_binding(key_id)),
                        valid_from=now,
                        valid_to=None,
                    )
                )
            log.info("created audit trail signing key %s", key_id)
            return SigningKey(key_id, private_key)
        loaded = serialization.load_der_private_key(
            self.barrier.open(row.private_key_sealed, key_binding(row.fingerprint)), password=None
        )
        if not isinstance(loaded, rsa.RSAPrivateKey) or fingerprint(public_key_der(loaded.public_key())) != (
            row.fingerprint
        ):
            raise ValueError(f"audit trail key {row.fingerprint} does not match its fingerprint")
        return SigningKey(row.fingerprint, loaded)


def public_keys(engine: Engine) -> list[Row[Any]]:
    """Every trail key ever used (public halves only), oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    _KEYS.c.fingerprint, _KEYS.c.public_key, _KEYS.c.valid_from, _KEYS.c.valid_to
                ).order_by(_KEYS.c.valid_from, _KEYS.c.fingerprint)
            ).all()
        )


def vouched_public_keys(
    engine: Engine, barrier: Barrier
) -> tuple[dict[str, rsa.RSAPublicKey], dict[str, str]]:
    """The trail keys the root key vouches for, by fingerprint, and every other row of
    ``audit_trail_keys`` with why it is not trusted.

    A key is vouched for when its ``private_key_sealed`` opens with ``barrier`` bound to its fingerprint
    and holds the RSA private key of its ``public_key``, whose MD5 is that fingerprint. A key someone
    added through the database (their own public key beside a sealed value they could not make without
    the root key) fails the first check."""
    with engine.connect() as conn:
        rows = conn.execute(select(_KEYS.c.fingerprint, _KEYS.c.public_key, _KEYS.c.private_key_sealed)).all()
    trusted: dict[str, rsa.RSAPublicKey] = {}
    untrusted: dict[str, str] = {}
    for row in rows:
        key_id = str(row.fingerprint)
        public, reason = _vouched(key_id, bytes(row.public_key), bytes(row.private_key_sealed), barrier)
        if public is not None:
            trusted[key_id] = public
        else:
            untrusted[key_id] = reason
    return trusted, untrusted


def _vouched(
    key_id: str, public_der: bytes, sealed: bytes, barrier: Barrier
) -> tuple[rsa.RSAPublicKey | None, str]:
    try:
        public = serialization.load_der_public_key(public_der)
    except ValueError:
        return None, "its public key is not a DER-encoded key"
    if not isinstance(public, rsa.RSAPublicKey):
        return None, "its public key is not an RSA key"
    if fingerprint(public_key_der(public)) != key_id:
        return None, "its fingerprint is not the MD5 of its public key"
    try:
        opened = barrier.open(sealed, key_binding(key_id))
    except BarrierError:
        return None, (
            "its private half does not open with the root key: the server never made this key (it was "
            "added through the database)"
        )
    try:
        private = serialization.load_der_private_key(opened, password=None)
    except (ValueError, TypeError):
        return None, "its sealed private half is not a private key"
    if not isinstance(private, rsa.RSAPrivateKey) or public_key_der(private.public_key()) != public_key_der(
        public
    ):
        return None, "its sealed private half does not belong to its public key"
    return public, ""
