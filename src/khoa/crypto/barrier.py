"""The barrier: everything secret that reaches storage is sealed under the root key first.

Sealed values carry a format version byte and are bound (as AES-GCM associated data) to the place
they belong, so a value copied into another row or column fails to open instead of being misused.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12
ROOT_KEY_BYTES = 32


class BarrierError(Exception):
    """A sealed value failed to open: wrong root key, tampering, or a value moved between places."""


class Barrier:
    """Seals and opens values with the root key (AES-256-GCM)."""

    def __init__(self, root_key: bytes) -> None:
        if len(root_key) != ROOT_KEY_BYTES:
            raise ValueError("the root key must be 256 bits")
        self._aead = AESGCM(root_key)

    def seal(self, plaintext: bytes, binding: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, _FORMAT_V1 + binding.encode())

    def open(self, sealed: bytes, binding: str) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _FORMAT_V1:
            raise BarrierError("unknown sealed value format")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], _FORMAT_V1 + binding.encode())
        except InvalidTag:
            raise BarrierError("sealed value failed authentication") from None
