"""The trail's integrity through a real server and the CLI, as CloudTrail's log file validation.

Calls are made, ``khoa audit digest`` closes periods, ``khoa audit verify`` and the openssl script of
docs/audit-verification.md (run as documented) accept the intact trail, and each kind of tampering is
caught by both. Two server processes on one PostgreSQL deliver every event exactly once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select

from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.iam import allow, document, trust
from tests.support.identity import eventually, new_user, session
from tests.support.khoa_cli import run_khoa
from tests.support.server import ACCOUNT_ID, SECRET_ACCESS_KEY, KhoaServer

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


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent checks (CLI processes that only read the installation) at once; their results
    in order. Most of a check's time is its interpreter starting, so the wait is for the slowest."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def copy_installation(data_dir: Path, to: Path, *, root_key: bool = True) -> Path:
    """A copy of a stopped server's installation (database, root key, trail files) at ``to``, to
    tamper with or check apart from the original; without its root key when ``root_key`` is False."""
    shutil.copytree(data_dir, to, ignore=None if root_key else shutil.ignore_patterns("root.key"))
    return to


@dataclass
class Trail:
    data_dir: Path
    env: dict[str, str]
    keys: Path
    script: Path

    @property
    def audit(self) -> Path:
        return self.data_dir / "audit"

    def copy(self, to: Path) -> Trail:
        """The same trail in an installation of its own (to tamper with)."""
        return replace(self, data_dir=copy_installation(self.data_dir, to))

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
            # No pause between periods: a chain's digests end at distinct seconds anyway (each at
            # least a second after the one before), and a digest command takes over a second.
        exported = run_khoa(
            env, "audit", "public-keys", "--out", str(base / "keys"), "--data-dir", str(server.data_dir)
        )
        assert exported.returncode == 0, exported.stderr
    finally:
        server.stop()
    script = base / "verify-trail.sh"
    script.write_text(doc_script())
    # The tests only read this trail; the tampering tests change copies of it (see `tampered`).
    yield Trail(server.data_dir, env, base / "keys", script)


def test_intact_trail_verifies_with_khoa_and_with_openssl(trail: Trail) -> None:
    assert len(trail.digests()) == 3 and len(trail.logs()) == 3
    assert len(trail.digests("eu-west-1")) == 2 and len(trail.logs("eu-west-1")) == 1

    result, as_json, pinned, future, bad_time, openssl = concurrently(
        trail.verify,
        lambda: trail.verify("--json"),
        lambda: trail.verify("--public-keys", str(trail.keys)),
        lambda: trail.verify("--from", "2999-01-01T00:00:00Z"),
        lambda: trail.verify("--from", "not a time"),
        lambda: run_script(trail.script, trail.audit, trail.keys),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5/5 digest files valid" in result.stdout and "4/4 log files valid" in result.stdout
    assert "intact" in result.stdout

    report = json.loads(as_json.stdout)
    assert report["intact"] and report["findings"] == []
    assert pinned.returncode == 0, pinned.stdout
    assert future.returncode == 0 and "0/0 digest files valid" in future.stdout
    assert bad_time.returncode == 2

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


Checked = tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def tampered(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Checked]]]:
    """Each TAMPERING case applied to a copy of the trail of its own, then checked there by ``khoa
    audit verify`` and by the openssl script: (verify's result, the script's). The cases share
    nothing, so they are all started at once (a few at a time) and each test waits for its own."""
    base = tmp_path_factory.mktemp("tampered")

    def check(copy: Trail, tamper: Callable[[Trail], None]) -> Checked:
        tamper(copy)
        return copy.verify(), run_script(copy.script, copy.audit, copy.keys)

    with ThreadPoolExecutor(max_workers=4) as pool:
        yield {
            case: pool.submit(check, trail.copy(base / f"case-{number}"), tamper)
            for number, (case, (tamper, _, _)) in enumerate(TAMPERING.items())
        }


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected_by_verify_and_by_openssl(
    tampered: dict[str, Future[Checked]], case: str
) -> None:
    _, reported, script_says = TAMPERING[case]
    result, openssl = tampered[case].result()
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout, result.stdout
    assert "NOT intact" in result.stdout
    assert openssl.returncode != 0, openssl.stdout
    assert script_says in openssl.stdout, openssl.stdout


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
        closed = threading.Event()  # a digest ran alongside the traffic and the jobs: traffic may end
        errors: list[BaseException] = []
        job_rounds: list[tuple[int, int]] = []
        digests: list[int] = []

        def traffic(server: KhoaServer, worker: int) -> None:
            try:
                kms = server.client("kms")
                key_id = kms.create_key(Description=f"w{worker}")["KeyMetadata"]["KeyId"]
                deadline = time.monotonic() + 40  # a bound; the traffic ends once `closed` is set
                while not closed.is_set() and time.monotonic() < deadline:
                    kms.encrypt(KeyId=key_id, Plaintext=b"x")
                    kms.describe_key(KeyId=key_id)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def jobs() -> None:
            while not stop.is_set():
                job_rounds.append((a.run_jobs(), b.run_jobs()))
                time.sleep(0.5)

        def leader_delivered() -> bool:
            return any("audit trail: delivered" in s.log_path.read_text(errors="replace") for s in (a, b))

        def closer() -> None:
            # First the leader's job alone (it delivers what it saw 10 s earlier: wait until it says
            # it delivered), then both at once, under the traffic.
            while not leader_delivered():
                if stop.wait(0.2):
                    return
            digests.append(
                run_khoa(
                    env, "audit", "digest", "--database-url", private_postgres, "--data-dir", str(data)
                ).returncode
            )
            closed.set()

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


# -- someone who can write the database and the audit directory, without the root key ---------------
# (docs/threat-model.md 5a; the red team's findings 2, 3 and 5)


def _sql(data_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(data_dir / "khoa.db", timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _close_period(server: KhoaServer) -> None:
    # No pause first: every call's record is committed before its response, `khoa audit digest`
    # waits its own settle time, and a chain's digests end at distinct seconds anyway.
    closed = run_khoa(server.env(), "audit", "digest", "--data-dir", str(server.data_dir))
    assert closed.returncode == 0, closed.stderr


def _verify(server: KhoaServer, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``khoa audit verify`` of the server's installation (or of a copy of it at ``data_dir``)."""
    where = server.data_dir if data_dir is None else data_dir
    return run_khoa(server.env(), "audit", "verify", "--data-dir", str(where), *args)


def _events_in_files(data_dir: Path) -> list[str]:
    return [
        r["eventName"]
        for path in sorted((data_dir / "audit").glob("AWSLogs/*/CloudTrail/*/**/*.json.gz"))
        for r in json.loads(gzip.decompress(path.read_bytes()))["Records"]
    ]


def _plant_trail_key(data_dir: Path) -> tuple[rsa.RSAPrivateKey, str]:
    """An RSA key of one's own in audit_trail_keys, beside a sealed value one cannot make (a retired
    key, so the server keeps signing with its own)."""
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = mine.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    fingerprint = hashlib.md5(der, usedforsecurity=False).hexdigest()
    with _sql(data_dir) as conn:
        conn.execute(
            "insert into audit_trail_keys (fingerprint, public_key, private_key_sealed, valid_from, "
            "valid_to) values (?, ?, ?, 0, 1)",
            (fingerprint, der, b"\x01" + b"\x00" * 40),
        )
    return mine, fingerprint


def _forge_without(data_dir: Path, event_name: str, key: rsa.RSAPrivateKey, fingerprint: str) -> None:
    """Remove every ``event_name`` record from the log files, rows and files, and re-sign every digest
    of every chain with ``key`` (the red team's r2: no root key involved)."""
    audit = data_dir / "audit"
    with _sql(data_dir) as conn:
        changed: dict[str, str] = {}
        for row in conn.execute("select * from audit_log_files").fetchall():
            records = json.loads(gzip.decompress(row["content"]))["Records"]
            kept = [r for r in records if r["eventName"] != event_name]
            if len(kept) == len(records):
                continue
            content = json.dumps({"Records": kept}, separators=(",", ":")).encode()
            packed = gzip.compress(content, mtime=0)
            (audit / row["s3_object"]).write_bytes(packed)
            changed[row["s3_object"]] = hashlib.sha256(content).hexdigest()
            conn.execute(
                "update audit_log_files set content = ?, hash_value = ?, event_count = ? where file_id = ?",
                (packed, changed[row["s3_object"]], len(kept), row["file_id"]),
            )
        conn.execute("delete from audit_events where event_name = ?", (event_name,))
        for chain in conn.execute("select distinct account_id, region from audit_digests").fetchall():
            previous: tuple[str, str] | None = None
            for row in conn.execute(
                "select * from audit_digests where account_id = ? and region = ? order by position",
                tuple(chain),
            ).fetchall():
                body = json.loads(gzip.decompress(row["content"]))
                for entry in body["logFiles"]:
                    entry["hashValue"] = changed.get(entry["s3Object"], entry["hashValue"])
                if previous is not None:
                    body["previousDigestHashValue"], body["previousDigestSignature"] = previous
                body["digestPublicKeyFingerprint"] = fingerprint
                content = json.dumps(body, separators=(",", ":")).encode()
                digest_hash = hashlib.sha256(content).hexdigest()
                to_sign = "\n".join(
                    [
                        body["digestEndTime"],
                        f"khoa-audit/{body['digestS3Object']}",
                        digest_hash,
                        previous[1] if previous else "null",
                    ]
                ).encode()
                signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256()).hex()
                packed = gzip.compress(content, mtime=0)
                (audit / row["s3_object"]).write_bytes(packed)
                (audit / (row["s3_object"] + ".sig")).write_text(signature + "\n")
                conn.execute(
                    "update audit_digests set content = ?, hash_value = ?, signature = ?, fingerprint = ? "
                    "where digest_id = ?",
                    (packed, digest_hash, signature, fingerprint, row["digest_id"]),
                )
                previous = (digest_hash, signature)


def test_a_trail_key_added_through_the_database_is_not_trusted(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    """Finding 3: verify trusts a trail key only when the root key vouches for it (its sealed private
    half opens, bound to its fingerprint, and matches), never because the database lists it."""
    server = fresh_server.start()
    secrets = server.client("secretsmanager")
    secrets.create_secret(Name="prod/db-master", SecretString="hunter2-" + uuid.uuid4().hex)
    _close_period(server)
    secrets.get_secret_value(SecretId="prod/db-master")  # the read to hide
    secrets.list_secrets()
    _close_period(server)
    secrets.describe_secret(SecretId="prod/db-master")
    _close_period(server)
    server.stop()
    keys = tmp_path / "keys"
    exported, intact = concurrently(
        lambda: run_khoa(
            server.env(), "audit", "public-keys", "--out", str(keys), "--data-dir", str(server.data_dir)
        ),
        lambda: _verify(server),
    )
    assert exported.returncode == 0, exported.stderr
    assert intact.returncode == 0

    # A key of one's own added through the database; the trail edited (a GetSecretValue removed from
    # the middle) and re-signed with it.
    mine, fingerprint = _plant_trail_key(server.data_dir)
    _forge_without(server.data_dir, "GetSecretValue", mine, fingerprint)
    assert "GetSecretValue" not in _events_in_files(server.data_dir)
    # The same forged installation without its root key (as where the trail is checked elsewhere).
    elsewhere = copy_installation(server.data_dir, tmp_path / "without-root-key", root_key=False)
    assert not (elsewhere / "root.key").exists()
    again = tmp_path / "keys-now"
    forged, reviewed, exported, refused, pinned = concurrently(
        lambda: _verify(server),
        lambda: run_khoa(server.env(), "review", "--format", "json", "--data-dir", str(server.data_dir)),
        lambda: run_khoa(
            server.env(), "audit", "public-keys", "--out", str(again), "--data-dir", str(server.data_dir)
        ),
        lambda: _verify(server, data_dir=elsewhere),
        lambda: _verify(server, "--public-keys", str(keys), data_dir=elsewhere),
    )
    assert forged.returncode == 1, forged.stdout
    assert "INVALID DIGEST" in forged.stdout and "not vouch" in forged.stdout
    assert "UNTRUSTED KEY" in forged.stdout and fingerprint in forged.stdout
    assert "NOT intact" in forged.stdout
    # `khoa review`'s trail rule (run where the root key is) trusts the same keys verify does.
    trail = [f for f in json.loads(reviewed.stdout)["findings"] if f["resource"].endswith("/audit-trail")]
    assert any(fingerprint in f["message"] and "does not vouch" in f["message"] for f in trail), trail
    # Keys exported now, to pin, leave the planted one out.
    assert exported.returncode == 0 and f"trail key {fingerprint} left out" in exported.stderr
    assert sorted(p.name for p in again.glob("*.pem")) == sorted(p.name for p in keys.glob("*.pem"))
    # Without the root key verify cannot tell which of the database's keys to trust: it refuses,
    # unless keys pinned earlier are given (which catch the forgery too).
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--public-keys" in refused.stderr and "intact" not in refused.stdout
    assert pinned.returncode == 1 and "INVALID DIGEST" in pinned.stdout

    # The server's next digest, signed with its real key onto the forged chain, changes nothing.
    server.start()
    server.client("secretsmanager").list_secrets()
    _close_period(server)
    server.stop()
    later = _verify(server)
    assert later.returncode == 1, later.stdout
    assert "UNTRUSTED KEY" in later.stdout


def _cut_newest_period(data_dir: Path) -> None:
    """The red team's r1: plain SQL and file deletes, no key of any kind. The newest digest of each
    chain past its first goes, with its log files, their events and the delivery cursor's memory."""
    audit = data_dir / "audit"
    with _sql(data_dir) as conn:
        heads = conn.execute(
            "select d.* from audit_digests d where position = (select max(position) from audit_digests e "
            "where e.account_id = d.account_id and e.region = d.region)"
        ).fetchall()
        for head in heads:
            if head["position"] < 2:
                continue
            files = conn.execute("select * from audit_log_files where digest_id = ?", (head["digest_id"],))
            for row in files.fetchall():
                (audit / row["s3_object"]).unlink()
                conn.execute(
                    "delete from audit_events where account_id = ? and region = ? "
                    "and event_time between ? and ?",
                    (row["account_id"], row["region"], row["oldest_event_time"], row["newest_event_time"]),
                )
            conn.execute("delete from audit_log_files where digest_id = ?", (head["digest_id"],))
            conn.execute("delete from audit_digests where digest_id = ?", (head["digest_id"],))
            (audit / head["s3_object"]).unlink()
            (audit / (head["s3_object"] + ".sig")).unlink()
        newest = conn.execute("select max(seq) from audit_events").fetchone()[0]
        conn.execute("update audit_delivery set delivered_seq = ?, held = '[]'", (newest,))
        for table in ("audit_key_usage", "audit_access_key_usage"):
            conn.execute(f"delete from {table} where seq > ?", (newest,))


def test_a_pinned_head_catches_the_newest_period_cut_from_the_database_and_directory(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    """Finding 2: the database's list of digests is no anchor against someone who can write it. verify
    prints each chain's head; given back (--expect-digest) it must still be in the chain."""
    server = fresh_server.start()
    secrets = server.client("secretsmanager")
    secrets.create_secret(Name="benign/one", SecretString="x" * 20)
    _close_period(server)
    secrets.create_secret(Name="prod/db-master", SecretString="hunter2-" + uuid.uuid4().hex)
    secrets.get_secret_value(SecretId="prod/db-master")
    secrets.delete_secret(SecretId="prod/db-master", ForceDeleteWithoutRecovery=True)
    _close_period(server)
    server.stop()

    intact, as_json = concurrently(lambda: _verify(server), lambda: _verify(server, "--json"))
    assert intact.returncode == 0, intact.stdout
    printed = re.findall(r"sha256 ([0-9a-f]{64})", intact.stdout)
    report = json.loads(as_json.stdout)
    assert [head["hashValue"] for head in report["heads"]] == printed and len(printed) == 1
    (head,) = report["heads"]
    digest_file = server.data_dir / "audit" / head["digest"]
    assert hashlib.sha256(gzip.decompress(digest_file.read_bytes())).hexdigest() == printed[0]
    # What an operator keeps out of reach: the verify output, or a copy of the newest digest.
    saved = tmp_path / "heads.txt"
    saved.write_text(intact.stdout)
    copy = tmp_path / "newest-digest.json.gz"
    shutil.copy2(digest_file, copy)
    pins = (str(saved), printed[0], str(copy))
    # Each pin checked against the trail as it is (a copy of the installation kept as it is) and
    # against the trail cut back, all at once.
    uncut = copy_installation(server.data_dir, tmp_path / "uncut")
    _cut_newest_period(server.data_dir)
    assert "GetSecretValue" not in _events_in_files(server.data_dir)
    checked = concurrently(
        *(lambda pin=pin: _verify(server, "--expect-digest", pin, data_dir=uncut) for pin in pins),
        *(lambda pin=pin: _verify(server, "--expect-digest", pin) for pin in pins),
    )
    for kept in checked[: len(pins)]:
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert "1 pinned digest(s) found in the chain" in kept.stdout
    for cut in checked[len(pins) :]:
        assert cut.returncode == 1, cut.stdout + cut.stderr
        assert "BROKEN CHAIN" in cut.stdout and f"pinned digest sha256 {printed[0]}" in cut.stdout

    # The server carries on from the cut, and the pin still catches it.
    server.start()
    server.client("secretsmanager").create_secret(Name="benign/two", SecretString="y" * 20)
    _close_period(server)
    server.stop()
    nothing = tmp_path / "empty.txt"
    nothing.write_text("no hash here\n")
    later, unnamed = concurrently(
        lambda: _verify(server, "--expect-digest", str(saved)),
        lambda: _verify(server, "--expect-digest", str(nothing)),
    )
    assert later.returncode == 1 and "BROKEN CHAIN" in later.stdout
    # A value that names no digest is a usage error, not a verdict.
    assert unnamed.returncode == 2


def _varied_traffic(server: KhoaServer) -> None:
    """Calls by the root, an IAM user, a role session, refused callers, and background work."""
    iam = server.client("iam")
    secrets = server.client("secretsmanager")
    secrets.create_secret(Name="rows/db", SecretString="v-" + uuid.uuid4().hex)
    secrets.get_secret_value(SecretId="rows/db")
    user = new_user(server, iam, allow(["secretsmanager:GetSecretValue", "sts:AssumeRole"]))
    role = iam.create_role(
        RoleName="rows-reader", AssumeRolePolicyDocument=trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"})
    )["Role"]
    iam.put_role_policy(
        RoleName="rows-reader", PolicyName="inline", PolicyDocument=document(allow("kms:ListKeys"))
    )
    eventually(lambda: _works(lambda: user.client("secretsmanager").get_secret_value(SecretId="rows/db")))
    reader = session(user, role["Arn"], name="nightly")
    eventually(lambda: _works(lambda: reader.client("kms").list_keys()))
    with pytest.raises(ClientError):
        reader.client("secretsmanager").get_secret_value(SecretId="rows/db")  # denied
    with pytest.raises(ClientError):
        server.client("kms", aws_secret_access_key="wrong" + SECRET_ACCESS_KEY[5:]).list_keys()
    with pytest.raises(ClientError):
        server.client("kms", aws_access_key_id="AKIAUNKNOWNKEY000000").list_keys()
    secrets.create_secret(Name="rows/old", SecretString="o-" + uuid.uuid4().hex)
    secrets.delete_secret(SecretId="rows/old", RecoveryWindowInDays=7)
    server.advance_clock(8 * 86400)
    assert server.run_jobs() > 0  # the deletion, as an AwsServiceEvent


def _works(call: Callable[[], object]) -> bool:
    try:
        call()
    except ClientError:
        return False
    return True


def test_verify_compares_delivered_event_rows_with_the_signed_log_files(
    fresh_server: KhoaServer, tmp_path: Path
) -> None:
    """Finding 5: LookupEvents, ``khoa audit tail`` and the alert rules read the database's rows, which
    whoever can write the database can change; verify holds every delivered row to its log file."""
    server = fresh_server.start()
    _varied_traffic(server)
    _close_period(server)
    server.stop()
    names = _events_in_files(server.data_dir)
    assert "DeleteSecret" in names and "AssumeRole" in names

    def reattribute(conn: sqlite3.Connection) -> None:
        seq, raw = conn.execute(
            "select seq, record from audit_events where event_name = 'GetSecretValue'"
        ).fetchone()
        record = json.loads(raw)
        record["sourceIPAddress"] = "10.9.9.9"
        conn.execute(
            "update audit_events set record = ?, source_ip = '10.9.9.9' where seq = ?",
            (json.dumps(record), seq),
        )

    def add_row(conn: sqlite3.Connection) -> None:
        row = dict(
            conn.execute("select * from audit_events where event_name = 'ListKeys' limit 1").fetchone()
        )
        record = json.loads(row["record"])
        record["eventID"] = row["event_id"] = str(uuid.uuid4())
        record["eventName"] = row["event_name"] = "ScheduleKeyDeletion"
        row["record"] = json.dumps(record)
        row["seq"] = conn.execute("select max(seq) + 1 from audit_events").fetchone()[0]
        conn.execute(
            f"insert into audit_events ({', '.join(row)}) values ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        conn.execute("update audit_delivery set delivered_seq = ? where name = 'trail'", (row["seq"],))

    cases: dict[str, tuple[Callable[[sqlite3.Connection], object], str]] = {
        "a delivered row deleted": (
            lambda c: c.execute("delete from audit_events where event_name = 'CreateSecret'"),
            "ROW DELETED",
        ),
        "a delivered row re-attributed": (reattribute, "ROW MODIFIED"),
        "only the Username column changed": (
            lambda c: c.execute(
                "update audit_events set username = 'backup' where event_name = 'AssumeRole'"
            ),
            "ROW MODIFIED",
        ),
        "an event moved to another account": (
            lambda c: c.execute(
                "update audit_events set account_id = '999988887777' where event_name = 'GetSecretValue'"
            ),
            "ROW MODIFIED",
        ),
        "a row added as delivered": (add_row, "ROW INSERTED"),
    }
    # Each case changes a copy of the installation of its own; the copies and the untouched
    # original are verified at once.
    copies: dict[str, Path] = {}
    for number, (case, (tamper, _)) in enumerate(cases.items()):
        copies[case] = copy_installation(server.data_dir, tmp_path / f"case-{number}")
        with _sql(copies[case]) as conn:
            tamper(conn)
    intact, *results = concurrently(
        lambda: _verify(server), *(lambda at=at: _verify(server, data_dir=at) for at in copies.values())
    )
    for (case, (_, kind)), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 1, f"{case}: {result.stdout}"
        assert kind in result.stdout and "NOT intact" in result.stdout, f"{case}: {result.stdout}"
    assert intact.returncode == 0, intact.stdout
    matched = re.search(r"(\d+)/(\d+) delivered event rows match the signed log files", intact.stdout)
    assert matched and matched.group(1) == matched.group(2) and int(matched.group(1)) >= 12, intact.stdout
