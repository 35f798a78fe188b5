"""The revocation epoch: makes a revocation through Khoa's API take effect at once in every process of
the node that made it.

Credentials (``KHOA_CREDENTIAL_CACHE_SECONDS``), callers' IAM policies (``KHOA_POLICY_CACHE_SECONDS``)
and key/secret/parameter metadata are cached per process, so the hot path does not query the database
on every request. A cache alone would let a deleted access key or a detached policy keep working until
its entries expire, in the other worker processes of the same node above all (the process that made the
change clears its own caches).

Every process of one node maps the same 8-byte counter file, ``<data-dir>/revocation-epoch``, into
memory. A call that may take access away (any IAM write; a key policy, grant or key-state change; a
secret's resource policy) increments it after its change is committed; every process reads it at the
start of each authenticated request (one load from shared memory, well under a microsecond) and, when
it moved, drops every cached credential, policy and metadata entry before anything is looked up. So
the very next request on this node, whichever worker takes it, sees the change. Reads in flight on
other threads at that moment (request threads, on PostgreSQL) may hold what the change replaced: the
caches do not store what such a read loaded (khoa.cache), so it cannot outlive the drop either.

What this does not cover: other nodes sharing the database (their caches expire within the lifetimes
above), and changes made behind Khoa's back in the database (likewise).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
from pathlib import Path

log = logging.getLogger("khoa.auth")

FILE_NAME = "revocation-epoch"
_FORMAT = "<Q"
_SIZE = struct.calcsize(_FORMAT)


class RevocationEpoch:
    """A counter shared by the processes of one node (``path``), or by this process only (``None``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._local = 0
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        if path is not None:
            self._open(path)

    def _open(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _SIZE:
                    os.ftruncate(fd, _SIZE)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def current(self) -> int:
        """The epoch now: changes whenever any process of this node bumped it."""
        if self._map is None:
            return self._local
        value: int = struct.unpack_from(_FORMAT, self._map, 0)[0]
        return value

    def bump(self) -> int:
        """Announce a revocation (call after its change is committed); returns the new epoch."""
        if self._map is None or self._fd is None:
            self._local += 1
            return self._local
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = (struct.unpack_from(_FORMAT, self._map, 0)[0] + 1) % (1 << 64)
            struct.pack_into(_FORMAT, self._map, 0, value)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return value

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_epoch(data_dir: Path) -> RevocationEpoch:
    """The node's epoch file in ``data_dir``; a process-local epoch (logged) if the file cannot be used."""
    try:
        return RevocationEpoch(data_dir / FILE_NAME)
    except OSError as exc:
        log.warning(
            "cannot use %s (%s): revocations reach this node's other worker processes only when their "
            "caches expire",
            data_dir / FILE_NAME,
            exc,
        )
        return RevocationEpoch(None)
