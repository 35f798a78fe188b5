"""Khoa's KMS ciphertext blob, format version 1.

    0      1 byte   format version (0x01)
    1     16 bytes  key id (UUID bytes)
    17    32 bytes  key material id (which version of the key's material)
    49    12 bytes  AES-GCM nonce
    61     n bytes  AES-256-GCM ciphertext followed by the 16-byte tag

The associated data is the 49-byte header followed by the canonical encryption context, so changing
the header, the context or a single ciphertext bit fails authentication.
"""

from __future__ import annotations

import os
import uuid
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = 0x01
_HEADER = 1 + 16 + 32
_NONCE = 12
_TAG = 16
MIN_LENGTH = _HEADER + _NONCE + _TAG


class InvalidCiphertext(Exception):
    """The blob is not a Khoa ciphertext, or it does not authenticate."""


class ParsedBlob(NamedTuple):
    key_id: str
    material_id: str
    header: bytes
    nonce: bytes
    body: bytes


def canonical_context(context: dict[str, str] | None) -> bytes:
    """Length-prefixed, key-sorted UTF-8 pairs: one byte string per distinct context."""
    if not context:
        return b""
    parts = [len(context).to_bytes(4, "big")]
    for key in sorted(context):
        for item in (key.encode(), context[key].encode()):
            parts.append(len(item).to_bytes(4, "big"))
            parts.append(item)
    return b"".join(parts)


def encrypt(
    material: bytes, key_id: str, material_id: str, plaintext: bytes, context: dict[str, str] | None
) -> bytes:
    header = bytes([FORMAT_V1]) + uuid.UUID(key_id).bytes + bytes.fromhex(material_id)
    nonce = os.urandom(_NONCE)
    body = AESGCM(material).encrypt(nonce, plaintext, header + canonical_context(context))
    return header + nonce + body


def parse(blob: bytes) -> ParsedBlob:
    if len(blob) < MIN_LENGTH or blob[0] != FORMAT_V1:
        raise InvalidCiphertext("not a Khoa ciphertext blob")
    key = blob[1:17].hex()  # str(uuid.UUID(bytes=...)), without building the UUID
    return ParsedBlob(
        key_id=f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}",
        material_id=blob[17:_HEADER].hex(),
        header=blob[:_HEADER],
        nonce=blob[_HEADER : _HEADER + _NONCE],
        body=blob[_HEADER + _NONCE :],
    )


def decrypt(material: bytes | AESGCM, parsed: ParsedBlob, context: dict[str, str] | None) -> bytes:
    """The plaintext of ``parsed`` under ``material`` (its bytes, or a cipher made of them once)."""
    cipher = material if isinstance(material, AESGCM) else AESGCM(material)
    try:
        return cipher.decrypt(parsed.nonce, parsed.body, parsed.header + canonical_context(context))
    except InvalidTag:
        raise InvalidCiphertext("ciphertext failed authentication") from None
