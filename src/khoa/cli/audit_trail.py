"""``khoa audit digest | verify | export | public-keys``: the trail's integrity, as CloudTrail validates it.

These are registered on the ``khoa audit`` sub-app (see :mod:`khoa.cli.audit`). ``digest`` and
``verify`` are pinned interfaces: scripts rely on their options and on ``verify`` exiting 0 only when
the trail is intact (1 when it is not, 2 when it could not be checked, 3 when there is no trail there).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from khoa.audit.errors import TrailBusy, TrailConflict
from khoa.audit.formats import iso
from khoa.audit.signing import public_keys
from khoa.audit.stored import StoredFiles
from khoa.audit.trail import AuditTrail
from khoa.audit.verify import load_pem_keys, load_public_keys, load_records, summary_lines, verify_trail
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
            help="Verify with these pinned PEM keys instead of the database's.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Validate the trail as CloudTrail does; exit 0 only when it is intact.

    Exit codes: 0 intact; 1 NOT intact; 2 could not check (unreadable records or keys, a bad option);
    3 no trail to verify (no installation there, or nothing recorded yet: a wrong --data-dir).

    Checks every digest signature, the digest chain and every log file's hash, and reports modified,
    deleted, inserted or reordered files and broken chains (exit 1; exit 2 when it cannot check).
    """
    start = _parse_time(from_time, "--from")
    end = _parse_time(to_time, "--to")
    settings = _settings(data_dir, database_url, verifying=True)
    engine = create_database_engine(settings.effective_database_url)
    try:
        records = load_records(engine)
        keys = load_pem_keys(keys_dir) if keys_dir is not None else load_public_keys(engine)
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
            out.print("[green]The trail is intact.[/green]")
        else:
            out.print(f"[bold red]The trail is NOT intact: {len(report.findings)} problem(s).[/bold red]")
    if not report.intact:
        raise typer.Exit(1)


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

    Without --out, prints them as CloudTrail's ListPublicKeys does (base64 DER PKCS#1 values).
    """
    settings = _settings(data_dir, database_url)
    engine = create_database_engine(settings.effective_database_url)
    try:
        rows = public_keys(engine)
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
