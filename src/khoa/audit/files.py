"""Audit files on disk, written so a crash never leaves a file the database does not know about.

A file is first written to ``.staging/`` and fsynced; then its writer records its row in one
transaction (a log file with the delivery cursor, a digest with the log files it lists); only then is
it moved into place. A restart finishes the move of any staged file the database knows about and
drops the others. A digest's signature lives beside it in ``<digest>.json.gz.sig`` (hex), standing in
for CloudTrail's ``x-amz-meta-signature`` object metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from sqlalchemy import Engine, Table, select

from khoa.crypto.seal import fsync_directory
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

STAGING_DIR = ".staging"
SIGNATURE_SUFFIX = ".sig"
_STALE_STAGING_SECONDS = 600.0

_FILES = schema.audit_log_files
_DIGESTS = schema.audit_digests


def _make_dirs(path: Path) -> None:
    """mkdir -p, syncing each parent that gained an entry so the new directories survive a crash."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o750)
        fsync_directory(directory.parent)


def write_synced(path: Path, data: bytes) -> None:
    _make_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def probe_directory(directory: Path, name: str) -> str | None:
    """Why ``directory`` cannot take a new file (None when it can): writes, fsyncs and removes
    ``name`` under it, creating the directories on the way (one byte, so a full disk says so:
    creating an empty file needs no data block)."""
    path = directory / name
    try:
        write_synced(path, b"\n")
        path.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return f"{directory} is not writable: {exc.strerror or type(exc).__name__}"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class AuditFiles:
    """Staging, publishing and crash recovery of the files under the audit directory."""

    def __init__(self, engine: Engine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory

    def staging_path(self, key: str) -> Path:
        return self.directory / STAGING_DIR / key.replace("/", "!")

    def stage(self, key: str, data: bytes) -> Path:
        path = self.staging_path(key)
        write_synced(path, data)
        return path

    def publish(self, staged: Path, key: str) -> None:
        """Move a staged file into place; never replaces a file already there. Tolerates a recovery
        pass (of a writer whose lock had expired) having published it first."""
        final = self.directory / key
        _make_dirs(final.parent)
        try:
            os.link(staged, final)
        except FileExistsError:
            if not _same_file(staged, final):
                log.warning("audit file %s already in place; keeping it", key)
        except FileNotFoundError:
            if not final.exists():
                raise
            return
        except OSError:  # a filesystem without hard links
            if final.exists():
                log.warning("audit file %s already in place; keeping it", key)
            else:
                os.rename(staged, final)
                fsync_directory(final.parent)
                fsync_directory(staged.parent)
                return
        fsync_directory(final.parent)
        staged.unlink(missing_ok=True)
        fsync_directory(staged.parent)

    def recorded(self, key: str, table: Table) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(table.c.s3_object).where(table.c.s3_object == key)).first() is not None

    def drop_unless_recorded(self, staged: Path, key: str, table: Table, *others: Path) -> None:
        try:
            recorded = self.recorded(key, table)
        except Exception:  # unknown: keep the staged files for recovery to decide
            log.exception("could not tell whether %s was recorded; recovery will decide", key)
            return
        if not recorded:
            for path in (staged, *others):
                path.unlink(missing_ok=True)

    def recover(self) -> None:
        """Finish moving staged files whose rows were committed; drop abandoned ones."""
        staging = self.directory / STAGING_DIR
        if not staging.is_dir():
            return
        cutoff = time.time() - _STALE_STAGING_SECONDS
        for path in sorted(staging.iterdir(), key=lambda p: p.name.endswith(SIGNATURE_SUFFIX), reverse=True):
            key = path.name.replace("!", "/")
            base = key.removesuffix(SIGNATURE_SUFFIX)
            table = _DIGESTS if "/CloudTrail-Digest/" in base else _FILES
            try:
                if self.recorded(base, table):
                    log.warning("finishing delivery of %s after an interruption", key)
                    self.publish(path, key)
                elif path.stat().st_mtime < cutoff:
                    log.warning("dropping abandoned staged audit file %s", key)
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue  # its writer finished it meanwhile
