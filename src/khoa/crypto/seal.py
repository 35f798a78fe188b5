"""Seal backends: where the root key comes from.

``file`` keeps a random root key in the data directory (mode 0600) — convenient, and only as safe as
that file. ``passphrase`` derives it with scrypt from ``KHOA_PASSPHRASE`` and a per-installation salt,
so the data directory and database alone reveal nothing. A check value sealed under the root key is
kept in storage so a wrong passphrase is refused at start instead of silently failing later.

The root key file is written durably (:func:`write_private_file`) before anything sealed under it is
committed: the database commits with ``synchronous=FULL``, and a key file still in the page cache when
the power goes would leave a database nothing opens. It is read only as a regular file
(:func:`read_root_key_file`): a FIFO in its place would block the start forever.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from khoa.crypto.barrier import ROOT_KEY_BYTES

ROOT_KEY_FILE = "root.key"
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
# Filesystems without hard links answer link() with one of these: the file is then renamed into place.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})


class SealError(Exception):
    """The root key cannot be obtained (missing passphrase, unreadable key file, wrong passphrase)."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> SealError:
    return SealError(f"{path} is {_kind(mode)}, not a regular file: it cannot hold the root key")


def read_root_key_file(path: Path) -> bytes | None:
    """The root key held by the file at ``path`` (symbolic links followed), or None when there is no
    such file (a dangling link included). Anything but a regular file of exactly 256 bits is refused
    with SealError: a FIFO, device, socket or directory before it is opened (a FIFO would block the
    start for ever), and again on the opened descriptor (opened non-blocking), so nothing swapped in
    between is read."""
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(path, before.st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SealError(f"cannot read the root key file {path}: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_regular(path, opened.st_mode)
        data = b""
        while len(data) <= ROOT_KEY_BYTES:  # one byte more than a key tells a longer file apart
            chunk = os.read(fd, ROOT_KEY_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise SealError(f"cannot read the root key file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) != ROOT_KEY_BYTES:
        raise SealError(f"{path} does not hold a 256-bit root key")
    return data


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (names created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_directory(directory: Path) -> None:
    """Create ``directory`` (and missing parents), each new one made durable in its parent."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):
            made.mkdir()
        fsync_directory(made.parent)


def write_private_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` to ``path`` durably, readable by the owner only (mode 0600 from creation): into a
    new temporary file in the same directory, fsynced, then put in place and the directory fsynced.
    After a crash ``path`` is absent or whole, never empty or partial. Without ``replace`` nothing by
    that name (a dangling symbolic link included) is overwritten: FileExistsError, and nothing changed."""
    directory = path.parent
    _ensure_directory(directory)
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, path)
        else:
            _publish_new(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    fsync_directory(directory)


def _publish_new(temporary: Path, path: Path) -> None:
    """Give the written ``temporary`` the name ``path`` unless something has it already. A hard link
    refuses an existing name atomically (two processes creating a key at once cannot both win); a
    filesystem without hard links gets a rename, checked just before."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(temporary, path)


def remove_file_durably(path: Path) -> None:
    """Remove ``path`` (if there) so that it stays removed after a crash."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_directory(path.parent)


def load_or_create_file_key(data_dir: Path) -> tuple[bytes, bool]:
    """Return the file backend's root key, creating it on first use; the flag says it was created.
    A created key is on disk (file and directory entry fsynced) before this returns, so before
    anything sealed under it can be committed."""
    path = data_dir / ROOT_KEY_FILE
    existing = read_root_key_file(path)
    if existing is not None:
        return existing, False
    key = os.urandom(ROOT_KEY_BYTES)
    try:
        write_private_file(path, key)
    except FileExistsError:
        # Another process made it first, or something that opens to nothing has the name.
        existing = read_root_key_file(path)
        if existing is None:
            raise SealError(
                f"{path} exists but opens no file (a dangling symbolic link?): remove it or restore "
                "what it points to"
            ) from None
        return existing, False
    # The data directory may be new too (made by this start, just before): its own entry, best
    # effort (a parent the server may not read is left to the operator who made it).
    with contextlib.suppress(OSError):
        fsync_directory(data_dir.parent)
    return key, True


def derive_passphrase_key(passphrase: str, salt: bytes) -> bytes:
    if not passphrase:
        raise SealError("the passphrase seal backend needs KHOA_PASSPHRASE")
    kdf = Scrypt(salt=salt, length=ROOT_KEY_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode())
