"""``khoa audit digest | verify | export | public-keys``: the trail's integrity, as CloudTrail validates it.

These are registered on the ``khoa audit`` sub-app (see :mod:`khoa.cli.audit`). ``digest`` and
``verify`` are pinned interfaces: scripts rely on their options and on ``verify`` exiting 0 only when
the trail is intact (1 when it is not, 2 when it could not be checked, 3 when there is no trail there).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from rich.console import Console
from sqlalchemy import Engine, Row
from sqlalchemy.exc import SQLAlchemyError

from khoa.audit.errors import TrailBusy, TrailConflict
from khoa.audit.formats import iso, sha256_hex
from khoa.audit.signing import public_keys, vouched_public_keys
from khoa.audit.stored import StoredFiles
from khoa.audit.trail import AuditTrail
from khoa.audit.verify import (
    EventRows,
    Expectations,
    Report,
    load_pem_keys,
    load_records,
    longest_write_seconds,
    overdue_grace,
    summary_lines,
    verify_trail,
)
from khoa.bootstrap import load_barrier
from khoa.cli.common import (
    CliError,
    DatabaseUrl,
    DataDir,
    NoInstallation,
    installation_settings,
    require_installation,
)
from khoa.crypto.barrier import BarrierError
from khoa.crypto.seal import SealError
from khoa.settings import Settings
from khoa.storage.database import create_database_engine, migrate

out = Console(soft_wrap=True, highlight=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


# ``khoa audit verify``'s exit code when there is no trail to check: a wrong --data-dir, or nothing
# recorded yet. It never says "intact" about a trail it did not see.
NO_TRAIL = 3


def _settings(data_dir: Path | None, database_url: str | None, *, verifying: bool = False) -> Settings:
    """Settings of an existing installation (never creates one: a one-line error when there is none)."""
    settings = installation_settings(data_dir, database_url)
    try:
        require_installation(settings)
    except NoInstallation as exc:
        if verifying:
            raise CliError(f"no audit trail to verify: {exc.message}", NO_TRAIL) from None
        raise
    return settings


def _parse_time(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        err.print(f"[red]{option} must be an ISO 8601 time[/red], e.g. 2026-01-31T12:00:00Z")
        raise typer.Exit(2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_HASH = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def _pinned_digests(values: list[str]) -> frozenset[str]:
    """The SHA-256s of the digests given with --expect-digest: a hash (64 hex digits, as verify prints
    it), a copy of a digest file (gzipped, as delivered, or its JSON), or a text file holding hashes
    (a saved verify output, its --json, or one hash a line)."""
    pinned: set[str] = set()
    for value in values:
        text = value.strip()
        if _HASH.fullmatch(text):
            pinned.add(text.lower())
            continue
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            err.print(
                f"[red]--expect-digest takes a digest's SHA-256 (64 hex digits) or a file:[/red] {value}: "
                f"{exc.strerror or type(exc).__name__}"
            )
            raise typer.Exit(2) from None
        if data[:2] == b"\x1f\x8b":
            try:
                pinned.add(sha256_hex(gzip.decompress(data)))
            except (OSError, EOFError, zlib.error):
                err.print(f"[red]--expect-digest: {value} is not a complete gzip file[/red]")
                raise typer.Exit(2) from None
            continue
        if data.lstrip()[:1] == b"{" and b'"digestS3Object"' in data:
            pinned.add(sha256_hex(data))  # a digest's uncompressed content
            continue
        found = {match.lower() for match in _HASH.findall(data.decode("utf-8", "replace"))}
        if not found:
            err.print(f"[red]--expect-digest: {value} holds no digest SHA-256 (64 hex digits)[/red]")
            raise typer.Exit(2) from None
        pinned |= found
    return frozenset(pinned)


def _trusted_keys(settings: Settings, engine: Engine) -> tuple[dict[str, RSAPublicKey], dict[str, str]]:
    """The trail keys the root key vouches for (and the others): the database's listing alone proves
    nothing, as whoever can write it can add a key. Exit 2 when the root key cannot be had here."""
    if not public_keys(engine):
        return {}, {}  # no key yet (nor anything signed): nothing to vouch for
    try:
        barrier = load_barrier(settings, engine, create=False)
    except (SealError, BarrierError) as exc:
        err.print(
            f"[red]cannot tell which trail keys to trust:[/red] {exc}. Without the root key the database's "
            "keys prove nothing (whoever can write the database can add one); verify with keys you "
            "exported earlier (khoa audit public-keys --out DIR) and kept where the database's writers "
            "cannot change them: khoa audit verify --public-keys DIR"
        )
        raise typer.Exit(2) from None
    return vouched_public_keys(engine, barrier)


def digest(
    wait: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0, help="Seconds to wait for another process writing the trail."),
    ] = 60.0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Close the current period now: deliver pending events, write each chain's signed digest."""
    settings = _settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        migrate(engine)
        barrier = load_barrier(settings, engine, create=False)
        closed = AuditTrail(engine, barrier, settings).close_period(wait=wait)
    except (SealError, BarrierError) as exc:
        err.print(f"[red]cannot open the installation:[/red] {exc}")
        raise typer.Exit(1) from None
    except (TrailBusy, TrailConflict) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    trail = settings.effective_audit_dir
    for key in closed.log_files:
        out.print(f"log file  {trail / key}")
    for key in closed.digests:
        out.print(f"digest    {trail / key}")
    out.print(f"Delivered {len(closed.log_files)} log file(s); wrote {len(closed.digests)} digest file(s).")


def verify(
    from_time: Annotated[
        str | None,
        typer.Option("--from", metavar="TIME", help="Check digests ending at or after this time (ISO 8601)."),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="TIME", help="Check digests starting at or before this time (ISO 8601)."
        ),
    ] = None,
    keys_dir: Annotated[
        Path | None,
        typer.Option(
            "--public-keys",
            metavar="DIR",
            help=(
                "Verify with these pinned PEM keys instead of the database's keys the root key vouches "
                "for (needed where the root key is not)."
            ),
        ),
    ] = None,
    expect_digest: Annotated[
        list[str] | None,
        typer.Option(
            "--expect-digest",
            metavar="HASH|FILE",
            help=(
                "A digest that must still be in the chain: its SHA-256 as verify printed it, a file "
                "holding such hashes (a saved verify output), or a copy of the digest file. Repeatable."
            ),
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Validate the trail as CloudTrail does; exit 0 only when it is intact.

    Exit codes: 0 intact; 1 NOT intact; 2 could not check (unreadable records or keys, no root key
    and no --public-keys, a bad option); 3 no trail to verify (no installation there, or nothing
    recorded yet: a wrong --data-dir).

    Checks every digest signature, the digest chain and every log file's hash, and reports modified,
    deleted, inserted or reordered files and broken chains; compares the events' database rows with
    the signed log files; trusts only trail keys the root key vouches for (or the --public-keys you
    pinned). Prints each chain's newest digest: keep those lines where the trail's writers cannot
    change them, and pass them back later with --expect-digest to show the chain was not cut back.
    """
    start = _parse_time(from_time, "--from")
    end = _parse_time(to_time, "--to")
    pinned = _pinned_digests(expect_digest or [])
    settings = _settings(data_dir, database_url, verifying=True)
    engine = create_database_engine(settings.effective_database_url)
    try:
        records = load_records(engine)
        untrusted: dict[str, str] = {}
        if keys_dir is not None:
            keys = load_pem_keys(keys_dir)
        else:
            keys, untrusted = _trusted_keys(settings, engine)
        expect = Expectations(
            pinned=pinned,
            digest_seconds=settings.audit_digest_seconds,
            grace_seconds=overdue_grace(settings.job_interval_seconds),
        )
        # On the embedded database this node delivered every file; nodes sharing a database each
        # hold the files they delivered, and the database the whole trail.
        report = verify_trail(
            settings.effective_audit_dir,
            keys,
            records,
            start=start,
            end=end,
            stored=StoredFiles(engine),
            directory_complete=settings.effective_database_url.startswith("sqlite"),
            untrusted_keys=untrusted,
            expect=expect,
            events=EventRows(
                engine,
                settings.audit_retention_days,
                time.time(),
                longest_write_seconds(settings.rotation_step_timeout_seconds),
            ),
        )
    except (SQLAlchemyError, OSError, ValueError) as exc:
        err.print(f"[red]cannot read the trail's records:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    audit_dir = settings.effective_audit_dir
    if not records.digests and not records.log_files and not any(p.is_file() for p in audit_dir.rglob("*")):
        raise CliError(
            f"no audit trail to verify: the installation has recorded no digest or log file and {audit_dir} "
            "holds none (check --data-dir; a new installation has one after `khoa audit digest`)",
            NO_TRAIL,
        )
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for finding in report.sorted_findings():
            out.print(f"{finding.kind:<14} {finding.path}\n               {finding.detail}")
        if report.findings:
            out.print()
        for line in summary_lines(report):
            out.print(line)
        if report.intact:
            _print_heads(report)
            out.print("[green]The trail is intact.[/green]")
        else:
            out.print(f"[bold red]The trail is NOT intact: {len(report.findings)} problem(s).[/bold red]")
    if not report.intact:
        raise typer.Exit(1)


def _print_heads(report: Report) -> None:
    """The newest digest of each chain, to record where the trail's writers cannot change it."""
    if not report.heads:
        return
    out.print("Newest digest of each chain (keep these lines out of the trail's reach; verify later with")
    out.print("--expect-digest to prove the chain was not cut back since):")
    for head in report.heads:
        ends = iso(head.end_time) if head.end_time is not None else "?"
        out.print(f"  {head.account_id}/{head.region}  ends {ends}  sha256 {head.hash_value}")
        out.print(f"    {head.key}")


def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the trail's files under.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the complete trail, as the database keeps it, under a directory.

    Nodes sharing a database each deliver to their own audit directory; this writes every node's
    files (log files, digests and their signatures, in CloudTrail's layout) in one place, for the
    openssl script of docs/audit.md or for shipping elsewhere. Files already there are kept.
    """
    settings = _settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        written = StoredFiles(engine).export(out_dir)
    except (SQLAlchemyError, OSError) as exc:
        err.print(f"[red]cannot export the trail:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    out.print(f"Wrote {written} file(s) under {out_dir}.")


def _vouched_rows(settings: Settings, engine: Engine, rows: list[Row[Any]]) -> list[Row[Any]]:
    """The key rows the root key vouches for; all of them, with a warning, when it cannot be had."""
    try:
        barrier = load_barrier(settings, engine, create=False)
    except (SealError, BarrierError) as exc:
        err.print(
            f"[yellow]warning: these keys were not checked against the root key ({exc}): the database lists "
            "them, and whoever can write it can add one. Export them where the root key is.[/yellow]"
        )
        return rows
    trusted, untrusted = vouched_public_keys(engine, barrier)
    for key_id, reason in sorted(untrusted.items()):
        err.print(f"[yellow]warning: trail key {key_id} left out, not trusted: {reason}[/yellow]")
    return [row for row in rows if row.fingerprint in trusted]


def public_keys_command(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Write <fingerprint>.pem, <fingerprint>.der and public-keys.json here.",
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export the trail's public keys with their fingerprints, for verifying with openssl alone.

    Without --out, prints them as CloudTrail's ListPublicKeys does (base64 DER PKCS#1 values). Where
    the root key can be had, only the keys it vouches for are exported (a key added through the
    database is left out, with a warning); elsewhere every key is, with a warning that none was checked.
    """
    settings = _settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        rows = public_keys(engine)
        if rows:
            rows = _vouched_rows(settings, engine, rows)
    except SQLAlchemyError as exc:
        err.print(f"[red]cannot read the trail keys:[/red] {type(exc).__name__}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    listing = {
        "PublicKeyList": [
            {
                "Value": base64.b64encode(row.public_key).decode(),
                "ValidityStartTime": iso(row.valid_from),
                "ValidityEndTime": iso(row.valid_to) if row.valid_to is not None else None,
                "Fingerprint": row.fingerprint,
            }
            for row in rows
        ]
    }
    if out_dir is None:
        print(json.dumps(listing, indent=2))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        key = serialization.load_der_public_key(row.public_key)
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (out_dir / f"{row.fingerprint}.pem").write_bytes(pem)
        (out_dir / f"{row.fingerprint}.der").write_bytes(row.public_key)
        out.print(f"{row.fingerprint}  valid from {iso(row.valid_from)}  {out_dir / row.fingerprint}.pem")
    (out_dir / "public-keys.json").write_text(json.dumps(listing, indent=2) + "\n")
    if not rows:
        out.print("No trail key yet: the first digest creates it.")
