"""The trail's files as the database keeps them.

Every log file and digest file is committed with its row (revision 0012), so the database holds the
complete trail even when several nodes took turns delivering it, each to its own audit directory.
``khoa audit verify`` reads a file from here when the local directory does not have it, and
``khoa audit export`` writes the whole trail out as the directory layout CloudTrail uses (for the
openssl script of docs/audit.md, or for shipping the files elsewhere).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select

from khoa.audit.files import SIGNATURE_SUFFIX, write_synced
from khoa.storage import schema

_FILES = schema.audit_log_files
_DIGESTS = schema.audit_digests


class StoredFiles:
    """Read access to the stored copies; keys are the files' paths under the audit directory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.connect() as conn:
            self.digest_keys = frozenset(
                conn.execute(select(_DIGESTS.c.s3_object).where(_DIGESTS.c.content.is_not(None))).scalars()
            )
            self.log_keys = frozenset(
                conn.execute(select(_FILES.c.s3_object).where(_FILES.c.content.is_not(None))).scalars()
            )

    def __contains__(self, key: str) -> bool:
        return key in self.digest_keys or key in self.log_keys

    def read(self, key: str) -> bytes | None:
        """The file's bytes (gzipped, as delivered), or None when the database has no copy."""
        table = _DIGESTS if key in self.digest_keys else _FILES
        with self.engine.connect() as conn:
            content = conn.execute(select(table.c.content).where(table.c.s3_object == key)).scalar()
        return bytes(content) if content is not None else None

    def signature(self, key: str) -> str | None:
        """A digest's signature (hex), as its ``.sig`` file holds it."""
        if key not in self.digest_keys:
            return None
        with self.engine.connect() as conn:
            value = conn.execute(select(_DIGESTS.c.signature).where(_DIGESTS.c.s3_object == key)).scalar()
        return str(value) if value is not None else None

    def export(self, directory: Path) -> int:
        """Write every stored file (and each digest's signature file) under ``directory``, leaving
        files already there untouched; returns how many files were written."""
        written = 0
        for key in sorted(self.log_keys | self.digest_keys):
            target = directory / key
            if not target.exists():
                content = self.read(key)
                if content is None:
                    continue
                write_synced(target, content)
                written += 1
            signature = self.signature(key)
            sig_target = directory / (key + SIGNATURE_SUFFIX)
            if signature is not None and not sig_target.exists():
                write_synced(sig_target, signature.encode() + b"\n")
                written += 1
        return written
