"""Seal backends: where the root key comes from.

``file`` keeps a random root key in the data directory (mode 0600) — convenient, and only as safe as
that file. ``passphrase`` derives it with scrypt from ``KHOA_PASSPHRASE`` and a per-installation salt,
so the data directory and database alone reveal nothing. A check value sealed under the root key is
kept in storage so a wrong passphrase is refused at start instead of silently failing later.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from khoa.crypto.barrier import ROOT_KEY_BYTES

ROOT_KEY_FILE = "root.key"
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


class SealError(Exception):
    """The root key cannot be obtained (missing passphrase, unreadable key file, wrong passphrase)."""


def load_or_create_file_key(data_dir: Path) -> tuple[bytes, bool]:
    """Return the file backend's root key, creating it on first use; the flag says it was created."""
    path = data_dir / ROOT_KEY_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) != ROOT_KEY_BYTES:
            raise SealError(f"{path} does not hold a 256-bit root key")
        return key, False
    data_dir.mkdir(parents=True, exist_ok=True)
    key = os.urandom(ROOT_KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key, True


def derive_passphrase_key(passphrase: str, salt: bytes) -> bytes:
    if not passphrase:
        raise SealError("the passphrase seal backend needs KHOA_PASSPHRASE")
    kdf = Scrypt(salt=salt, length=ROOT_KEY_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode())
