"""The trail's integrity through a real server and the CLI, as CloudTrail's log file validation.

Calls are made, ``khoa audit digest`` closes periods, ``khoa audit verify`` and the openssl script of
docs/audit-verification.md (run as documented) accept the intact trail, and each kind of tampering is
caught by both. Two server processes on one PostgreSQL deliver every event exactly once.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.khoa_cli import run_khoa
from tests.support.server import SECRET_ACCESS_KEY, KhoaServer

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-verification.md"
SECRET_STRING = "pw-Secret-Str1ng-" + uuid.uuid4().hex
SECRET_STRING_2 = "pw-Rotated-Str1ng-" + uuid.uuid4().hex
PLAINTEXT = b"kms-plaintext-" + uuid.uuid4().hex.encode()
PARAMETER_VALUE = "ssm-secure-" + uuid.uuid4().hex


def doc_script() -> str:
    """The verification script exactly as docs/audit-verification.md shows it."""
    match = re.search(r"```bash\n(#!/usr/bin/env bash\n# verify-trail\.sh.*?)```", DOC.read_text(), re.S)
    assert match, "the verification script is missing from docs/audit-verification.md"
    return match.group(1)


def run_script(script: Path, audit: Path, keys: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), str(audit), str(keys)], capture_output=True, text=True, timeout=120
    )


@dataclass
class Trail:
    data_dir: Path
    env: dict[str, str]
    keys: Path
    script: Path
    pristine: Path

    @property
    def audit(self) -> Path:
        return self.data_dir / "audit"

    def restore(self) -> None:
        shutil.rmtree(self.audit)
        shutil.copytree(self.pristine, self.audit)

    def verify(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_khoa(self.env, "audit", "verify", "--data-dir", str(self.data_dir), *args)

    def logs(self, region: str = "us-east-1") -> list[str]:
        return sorted(
            p.relative_to(self.audit).as_posix()
            for p in self.audit.glob(f"AWSLogs/*/CloudTrail/{region}/**/*.json.gz")
        )

    def digests(self, region: str = "us-east-1") -> list[str]:
        return sorted(
            p.relative_to(self.audit).as_posix()
            for p in self.audit.glob(f"AWSLogs/*/CloudTrail-Digest/{region}/**/*.json.gz")
        )


def _traffic(server: KhoaServer, round_number: int) -> None:
    kms = server.client("kms")
    secrets = server.client("secretsmanager")
    ssm = server.client("ssm")
    if round_number == 0:
        key_id = kms.create_key(Description="trail")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/trail", TargetKeyId=key_id)
        kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        secrets.create_secret(Name="trail/db", SecretString=SECRET_STRING)
        secrets.get_secret_value(SecretId="trail/db")
        ssm.put_parameter(Name="/trail/pw", Value=PARAMETER_VALUE, Type="SecureString")
        ssm.get_parameter(Name="/trail/pw", WithDecryption=True)
        intruder = server.client("kms", aws_secret_access_key="wrong" + SECRET_ACCESS_KEY[5:])
        with pytest.raises(ClientError):
            intruder.list_keys()
    elif round_number == 1:
        blob = kms.encrypt(KeyId="alias/trail", Plaintext=PLAINTEXT)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == PLAINTEXT
        secrets.put_secret_value(SecretId="trail/db", SecretString=SECRET_STRING_2)
        server.client("kms", region="eu-west-1").create_key(Description="second chain")
    else:
        secrets.get_secret_value(SecretId="trail/db")
        kms.list_aliases()


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    """A trail of three periods (three digests in us-east-1, two in eu-west-1), made through a real
    server and ``khoa audit digest``; the server is stopped afterwards (verification is offline)."""
    base = tmp_path_factory.mktemp("trail")
    server = KhoaServer(base / "data").start()
    env = server.env()
    try:
        for round_number in range(3):
            _traffic(server, round_number)
            closed = run_khoa(env, "audit", "digest", "--data-dir", str(server.data_dir))
            assert closed.returncode == 0, closed.stderr
            assert "wrote" in closed.stdout
            time.sleep(1.1)  # digests of a chain end at distinct seconds anyway; keep names readable
        exported = run_khoa(
            env, "audit", "public-keys", "--out", str(base / "keys"), "--data-dir", str(server.data_dir)
        )
        assert exported.returncode == 0, exported.stderr
    finally:
        server.stop()
    script = base / "verify-trail.sh"
    script.write_text(doc_script())
    shutil.copytree(server.data_dir / "audit", base / "pristine")
    yield Trail(server.data_dir, env, base / "keys", script, base / "pristine")


def test_intact_trail_verifies_with_khoa_and_with_openssl(trail: Trail) -> None:
    assert len(trail.digests()) == 3 and len(trail.logs()) == 3
    assert len(trail.digests("eu-west-1")) == 2 and len(trail.logs("eu-west-1")) == 1

    result = trail.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5/5 digest files valid" in result.stdout and "4/4 log files valid" in result.stdout
    assert "intact" in result.stdout

    report = json.loads(trail.verify("--json").stdout)
    assert report["intact"] and report["findings"] == []
    pinned = trail.verify("--public-keys", str(trail.keys))
    assert pinned.returncode == 0, pinned.stdout
    future = trail.verify("--from", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and "0/0 digest files valid" in future.stdout
    assert trail.verify("--from", "not a time").returncode == 2

    openssl = run_script(trail.script, trail.audit, trail.keys)
    assert openssl.returncode == 0, openssl.stdout + openssl.stderr
    assert openssl.stdout.strip() == "trail intact"


def test_public_keys_export_for_openssl(trail: Trail, tmp_path: Path) -> None:
    listing = json.loads((trail.keys / "public-keys.json").read_text())["PublicKeyList"]
    assert len(listing) == 1
    fingerprint = listing[0]["Fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{32}", fingerprint)
    # The fingerprint, recomputed with openssl as documented.
    der = subprocess.run(
        [
            "openssl",
            "rsa",
            "-pubin",
            "-in",
            str(trail.keys / f"{fingerprint}.pem"),
            "-RSAPublicKey_out",
            "-outform",
            "DER",
        ],
        capture_output=True,
        check=True,
    ).stdout
    md5 = subprocess.run(["openssl", "dgst", "-md5", "-r"], input=der, capture_output=True, check=True).stdout
    assert md5.decode().split()[0] == fingerprint
    assert der == (trail.keys / f"{fingerprint}.der").read_bytes()
    # The CloudTrail-style Value converts to the same key with the documented commands.
    shell = (
        f"jq -r '.PublicKeyList[0].Value' {trail.keys}/public-keys.json | openssl base64 -d -A > key.der && "
        "openssl rsa -RSAPublicKey_in -inform DER -in key.der -pubout -out key.pem"
    )
    subprocess.run(["bash", "-c", shell], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "key.pem").read_bytes() == (trail.keys / f"{fingerprint}.pem").read_bytes()
    text = subprocess.run(
        ["openssl", "rsa", "-pubin", "-in", str(tmp_path / "key.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Public-Key: (2048 bit)" in text
    for digest in trail.digests() + trail.digests("eu-west-1"):
        data = json.loads(gzip.decompress((trail.audit / digest).read_bytes()))
        assert data["digestPublicKeyFingerprint"] == fingerprint
    # And as ListPublicKeys-shaped JSON on stdout.
    printed = json.loads(
        run_khoa(trail.env, "audit", "public-keys", "--data-dir", str(trail.data_dir)).stdout
    )
    assert printed["PublicKeyList"] == listing


def test_no_plaintext_in_trail_files(trail: Trail) -> None:
    forbidden = [
        SECRET_STRING.encode(),
        SECRET_STRING_2.encode(),
        PLAINTEXT,
        PARAMETER_VALUE.encode(),
        SECRET_ACCESS_KEY.encode(),
        b"PRIVATE KEY",
    ]
    import base64

    forbidden += [base64.b64encode(PLAINTEXT)]
    files = [p for p in trail.audit.rglob("*") if p.is_file()]
    assert files
    for path in files:
        raw = path.read_bytes()
        contents = [raw]
        if path.name.endswith(".json.gz"):
            contents.append(gzip.decompress(raw))
        for content in contents:
            for value in forbidden:
                assert value not in content, f"{value!r} found in {path}"


def test_every_event_delivered_once_in_order(trail: Trail) -> None:
    engine = create_database_engine(f"sqlite:///{trail.data_dir / 'khoa.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(schema.audit_events.c.event_id).order_by(schema.audit_events.c.seq)
            ).all()
            delivered_seq, held = conn.execute(
                select(schema.audit_delivery.c.delivered_seq, schema.audit_delivery.c.held).where(
                    schema.audit_delivery.c.name == "trail"
                )
            ).one()
            newest = conn.execute(select(func.max(schema.audit_events.c.seq))).scalar()
    finally:
        engine.dispose()
    assert rows and delivered_seq == newest and json.loads(held) == []
    in_files: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    for key in trail.logs() + trail.logs("eu-west-1"):
        file_records = json.loads(gzip.decompress((trail.audit / key).read_bytes()))["Records"]
        records += file_records
        in_files[key] = [r["eventID"] for r in file_records]
    everywhere = [e for ids in in_files.values() for e in ids]
    assert len(everywhere) == len(set(everywhere))  # no event in two files
    assert sorted(everywhere) == sorted(row.event_id for row in rows)
    for ids in in_files.values():  # each file holds its events in sequence order
        order = [r.event_id for r in rows if r.event_id in set(ids)]
        assert ids == order
    failed = [r for r in records if r.get("errorCode")]
    assert failed and failed[0]["eventName"] == "ListKeys"


def _swap(a: Path, b: Path) -> None:
    temporary = a.with_name(a.name + ".swap")
    os.replace(a, temporary)
    os.replace(b, a)
    os.replace(temporary, b)


def _edit_content(path: Path) -> None:
    content = gzip.decompress(path.read_bytes())
    index = content.index(b"kms.amazonaws.com")
    path.write_bytes(gzip.compress(content[:index] + b"K" + content[index + 1 :]))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _forge_log(trail: Trail) -> None:
    genuine = trail.audit / trail.logs()[0]
    records = json.loads(gzip.decompress(genuine.read_bytes()))
    records["Records"] = records["Records"][:1]
    name = re.sub(r"_[A-Za-z0-9]{16}\.json\.gz$", "_ForgedForgedForg.json.gz", genuine.name)
    (genuine.parent / name).write_bytes(gzip.compress(json.dumps(records).encode()))


def _forge_digest(trail: Trail) -> None:
    path = trail.audit / trail.digests()[1]
    data = json.loads(gzip.decompress(path.read_bytes()))
    data["logFiles"] = data["logFiles"][:0]  # hide a log file from the digest
    path.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":")).encode()))


# name: (tamper, what khoa audit verify says, what the openssl script says)
TAMPERING: dict[str, tuple[Callable[[Trail], None], str, str]] = {
    "edit one byte of a log file": (lambda t: _flip_byte(t.audit / t.logs()[1]), "MODIFIED", "modified"),
    "edit one byte of a log file's content": (
        lambda t: _edit_content(t.audit / t.logs()[0]),
        "MODIFIED",
        "modified",
    ),
    "delete a log file": (lambda t: (t.audit / t.logs()[2]).unlink(), "DELETED", "deleted"),
    "insert a forged log file": (_forge_log, "INSERTED", "in no digest (inserted)"),
    "reorder log files": (
        lambda t: _swap(t.audit / t.logs()[0], t.audit / t.logs()[2]),
        "REORDERED",
        "modified",
    ),
    "truncate the chain in the middle": (
        lambda t: (t.audit / t.digests()[1]).unlink(),
        "BROKEN CHAIN",
        "is missing (chain cut)",
    ),
    "truncate the chain at its end": (
        lambda t: (t.audit / t.digests()[-1]).unlink(),
        "BROKEN CHAIN",
        "in no digest (inserted)",
    ),
    "forge a digest": (_forge_digest, "INVALID DIGEST", "bad signature"),
    "reorder digests": (
        lambda t: _swap(t.audit / t.digests()[0], t.audit / t.digests()[2]),
        "REORDERED",
        ": moved",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected_by_verify_and_by_openssl(trail: Trail, case: str) -> None:
    tamper, reported, script_says = TAMPERING[case]
    trail.restore()
    try:
        tamper(trail)
        result = trail.verify()
        assert result.returncode == 1, result.stdout + result.stderr
        assert reported in result.stdout, result.stdout
        assert "NOT intact" in result.stdout
        openssl = run_script(trail.script, trail.audit, trail.keys)
        assert openssl.returncode != 0, openssl.stdout
        assert script_says in openssl.stdout, openssl.stdout
    finally:
        trail.restore()


def test_retention_removes_old_delivered_events_but_not_files(fresh_server: KhoaServer) -> None:
    fresh_server.extra_env["KHOA_AUDIT_RETENTION_DAYS"] = "1"
    server = fresh_server.start()
    server.client("kms").create_key(Description="old news")
    env = server.env()
    assert run_khoa(env, "audit", "digest", "--data-dir", str(server.data_dir)).returncode == 0
    files_before = sorted(p.name for p in (server.data_dir / "audit").rglob("*.json.gz"))
    server.advance_clock(2 * 86400)
    server.client("kms").list_keys()  # recent, and not delivered yet: stays
    assert server.run_jobs() > 0
    engine = create_database_engine(f"sqlite:///{server.data_dir / 'khoa.db'}")
    try:
        with engine.connect() as conn:
            left = conn.execute(select(schema.audit_events.c.event_name)).scalars().all()
    finally:
        engine.dispose()
    assert left == ["ListKeys"]
    files_after = sorted(p.name for p in (server.data_dir / "audit").rglob("*.json.gz"))
    assert set(files_before) <= set(files_after)
    result = run_khoa(env, "audit", "verify", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stdout


@pytest.mark.postgres
def test_two_processes_on_postgres_deliver_every_event_exactly_once(
    tmp_path: Path, private_postgres: str
) -> None:
    """Two servers share one PostgreSQL and one trail directory; only the leader's job delivers, and
    ``khoa audit digest`` runs alongside. No event is lost or duplicated, and the trail verifies."""
    data = tmp_path / "data"
    extra = {"KHOA_AUDIT_DELIVERY_SECONDS": "0"}
    a = KhoaServer(data, database_url=private_postgres, extra_env=dict(extra))
    b = KhoaServer(data, database_url=private_postgres, extra_env=dict(extra))
    a.start()
    b.start()
    try:
        env = a.env()
        stop = threading.Event()
        errors: list[BaseException] = []
        job_rounds: list[tuple[int, int]] = []
        digests: list[int] = []

        def traffic(server: KhoaServer, worker: int) -> None:
            try:
                kms = server.client("kms")
                key_id = kms.create_key(Description=f"w{worker}")["KeyMetadata"]["KeyId"]
                deadline = time.monotonic() + 16
                while time.monotonic() < deadline:
                    kms.encrypt(KeyId=key_id, Plaintext=b"x")
                    kms.describe_key(KeyId=key_id)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def jobs() -> None:
            while not stop.is_set():
                job_rounds.append((a.run_jobs(), b.run_jobs()))
                time.sleep(0.5)

        def closer() -> None:
            # First the leader's job alone (it delivers what it saw 10 s earlier), then both at once.
            if stop.wait(11):
                return
            while not stop.is_set():
                digests.append(
                    run_khoa(
                        env, "audit", "digest", "--database-url", private_postgres, "--data-dir", str(data)
                    ).returncode
                )

        workers = [threading.Thread(target=traffic, args=(s, i)) for i, s in enumerate([a, b, a, b])]
        helpers = [threading.Thread(target=jobs), threading.Thread(target=closer)]
        for thread in workers + helpers:
            thread.start()
        for thread in workers:
            thread.join(60)
        stop.set()
        for thread in helpers:
            thread.join(180)
        assert not errors
        assert digests and all(code == 0 for code in digests)
        # Only one process (the leader) ever ran the jobs.
        assert job_rounds and all(min(ran) == 0 for ran in job_rounds)
        leaders = {0 if ran_a else 1 for ran_a, ran_b in job_rounds if ran_a or ran_b}
        assert len(leaders) == 1
        leader, follower = (a, b) if leaders == {0} else (b, a)
        assert "audit trail: delivered" in leader.log_path.read_text()
        assert "audit trail: delivered" not in follower.log_path.read_text()

        final = run_khoa(env, "audit", "digest", "--database-url", private_postgres, "--data-dir", str(data))
        assert final.returncode == 0, final.stderr
        verified = run_khoa(
            env, "audit", "verify", "--database-url", private_postgres, "--data-dir", str(data)
        )
        assert verified.returncode == 0, verified.stdout

        engine = create_database_engine(private_postgres)
        try:
            with engine.connect() as conn:
                db_ids = conn.execute(select(schema.audit_events.c.event_id)).scalars().all()
                delivered_seq = conn.execute(
                    select(schema.audit_delivery.c.delivered_seq).where(
                        schema.audit_delivery.c.name == "trail"
                    )
                ).scalar()
                undelivered = conn.execute(
                    select(func.count())
                    .select_from(schema.audit_events)
                    .where(schema.audit_events.c.seq > delivered_seq)
                ).scalar()
                delivered_files = conn.execute(
                    select(func.count()).select_from(schema.audit_log_files)
                ).scalar()
        finally:
            engine.dispose()
        assert undelivered == 0
        file_ids = [
            r["eventID"]
            for path in sorted((data / "audit").glob("AWSLogs/*/CloudTrail/**/*.json.gz"))
            for r in json.loads(gzip.decompress(path.read_bytes()))["Records"]
        ]
        assert len(file_ids) == len(set(file_ids)) == len(db_ids) > 100
        assert set(file_ids) == set(db_ids)
        assert delivered_files == len(list((data / "audit").glob("AWSLogs/*/CloudTrail/**/*.json.gz")))
    finally:
        a.stop()
        b.stop()
