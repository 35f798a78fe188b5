"""Seals an operator controls (shamir: init, unseal, seal, rekey), auto-unseal (awskms through another
Khoa, pkcs11 on SoftHSM2) and seal migration, through the CLI against real server processes."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from khoa.bootstrap import provided_root_key
from khoa.cli.main import run
from khoa.crypto import shamir
from khoa.crypto.seal import SealError
from khoa.crypto.seal_wrappers import AwsKmsWrapper, Pkcs11Wrapper
from tests.conftest import missing_service
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer
from tests.support.xks_proxy import SoftHsm, softhsm_missing


def operator(
    server: KhoaServer, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``khoa operator ARGS`` through the command line's entry point, in this process (a process per
    call costs seconds on a loaded machine), with the server's environment and ``stdin`` as input."""
    full_env = server.env()
    full_env.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, full_env, clear=True),
        mock.patch.object(sys, "stdin", io.StringIO(stdin)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = run(["operator", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), " ".join(err.getvalue().split()))


def get(server: KhoaServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{server.endpoint}{path}", timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def shamir_server(data_dir: Path, **extra: str) -> KhoaServer:
    return KhoaServer(data_dir, harness=False, extra_env={"KHOA_SEAL_BACKEND": "shamir", **extra})


def init(server: KhoaServer, shares: int, threshold: int) -> list[str]:
    done = operator(
        server,
        "init",
        "--key-shares",
        str(shares),
        "--key-threshold",
        str(threshold),
        "--data-dir",
        str(server.data_dir),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert len(lines) == shares and len(set(lines)) == shares
    return lines


def tenant_account(server: KhoaServer, shares: list[str]) -> tuple[str, str]:
    """A second account (``khoa account create``, given the root key the ``shares`` make, as a sealed
    installation's command line needs it); its root's access key id and secret."""
    out = io.StringIO()
    key = shamir.combine([base64.b64decode(share) for share in shares])
    with (
        provided_root_key(key),
        mock.patch.dict(os.environ, server.env(), clear=True),
        contextlib.redirect_stdout(out),
    ):
        assert run(["account", "create", "--json", "--data-dir", str(server.data_dir)]) == 0
    made = json.loads(out.getvalue())
    return made["AccessKeyId"], made["SecretAccessKey"]


def unseal(server: KhoaServer, shares: list[str]) -> subprocess.CompletedProcess[str]:
    return operator(server, "unseal", "--endpoint-url", server.endpoint, stdin="\n".join(shares) + "\n")


def assert_sealed(server: KhoaServer) -> None:
    status, ready = get(server, "/_khoa/ready")
    assert status == 503 and ready["reason"] == "sealed"
    status, health = get(server, "/_khoa/health")
    assert status == 200 and health["sealed"] is True
    status, metrics = get(server, "/metrics")
    assert "khoa_sealed 1.0" in metrics
    status, page = get(server, "/console/")  # the web console says so, in HTML
    assert status == 503 and "Khoa is sealed" in page
    with pytest.raises(ClientError) as refused:
        server.client("kms").list_keys()
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Code"] == "ServiceUnavailableException" and "sealed" in error["Message"]


def test_shamir_init_unseal_seal_rekey_and_restart(tmp_path: Path) -> None:
    server = shamir_server(tmp_path / "data")
    shares = init(server, 5, 3)
    assert not list(server.data_dir.glob("root.key"))
    for share in shares:  # the shares are stored nowhere
        for path in server.data_dir.rglob("*"):
            if path.is_file():
                assert share.encode() not in path.read_bytes()
    again = operator(
        server, "init", "--key-shares", "3", "--key-threshold", "2", "--data-dir", str(server.data_dir)
    )
    assert again.returncode == 1 and "already initialised" in again.stderr
    server.start()
    try:
        assert_sealed(server)
        # two shares of a 3-threshold split: still sealed, progress reported
        partial = unseal(server, shares[:2])
        assert partial.returncode == 0 and "2 of 3" in partial.stderr
        assert_sealed(server)
        # a malformed share is refused; a third (any) share unseals
        bad = unseal(server, ["not-base64!"])
        assert bad.returncode == 1 and shares[0] not in bad.stderr
        for body in (b"[]", b"not json", b'{"key": "AA=="}'):
            bad_request = urllib.request.Request(f"{server.endpoint}/_khoa/unseal", data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(bad_request, timeout=10)
            assert refused.value.code == 400
        assert get(server, "/_khoa/seal-status")[1]["progress"] == 2
        done = unseal(server, [shares[4]])
        assert done.returncode == 0 and "Unsealed" in done.stderr
        assert get(server, "/_khoa/ready")[0] == 200
        assert "khoa_sealed 0.0" in get(server, "/metrics")[1]
        sm = server.client("secretsmanager")
        name = f"sealed-{uuid.uuid4().hex[:8]}"
        sm.create_secret(Name=name, SecretString="s3cr3t-value")
        # the ListKeys refused while sealed is in the trail now, with its error
        cloudtrail = server.client("cloudtrail")
        events: list[Any] = []
        for _ in range(50):
            events = cloudtrail.lookup_events(
                LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListKeys"}]
            )["Events"]
            if events:
                break
            time.sleep(0.1)
        records = [json.loads(e["CloudTrailEvent"]) for e in events]
        assert any(r.get("errorCode") == "ServiceUnavailableException" for r in records)
        assert all(r["userIdentity"].get("accessKeyId") == ACCESS_KEY_ID for r in records)

        # a wrong quorum (3 shares of another installation's split would do; here: a reset, then shares
        # from a rekeyed split are not yet valid) -- sealing needs the root's signature
        unsigned = urllib.request.Request(f"{server.endpoint}/_khoa/seal", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as forbidden:
            urllib.request.urlopen(unsigned, timeout=10)
        assert forbidden.value.code == 403
        # a tenant account's root may not stop every account's service
        tenant_key, tenant_secret = tenant_account(server, shares[:3])
        refused_seal = operator(
            server,
            "seal",
            "--endpoint-url",
            server.endpoint,
            env={"AWS_ACCESS_KEY_ID": tenant_key, "AWS_SECRET_ACCESS_KEY": tenant_secret},
        )
        assert refused_seal.returncode != 0
        assert get(server, "/_khoa/ready")[0] == 200
        sealed = operator(
            server,
            "seal",
            "--endpoint-url",
            server.endpoint,
            env={"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY},
        )
        assert sealed.returncode == 0, sealed.stderr
        assert_sealed(server)

        # rekey (offline from the server: it only needs the database): 3 of the old shares in, 4/2 out
        rekeyed = operator(
            server,
            "rekey",
            "--key-shares",
            "4",
            "--key-threshold",
            "2",
            "--data-dir",
            str(server.data_dir),
            stdin="\n".join(shares[1:4]) + "\n",
        )
        assert rekeyed.returncode == 0, rekeyed.stderr
        new_shares = rekeyed.stdout.split()
        assert len(new_shares) == 4 and not set(new_shares) & set(shares)
        # old shares no longer reconstruct the key (threshold now 2: two old shares give a wrong key)
        wrong = unseal(server, shares[:2])
        assert wrong.returncode == 1 and "do not reconstruct" in wrong.stderr
        assert_sealed(server)
        assert unseal(server, new_shares[2:]).returncode == 0
        assert sm.get_secret_value(SecretId=name)["SecretString"] == "s3cr3t-value"
    finally:
        server.stop()
    # a restart comes up sealed; the new shares open it and the data is there
    server.start()
    try:
        assert_sealed(server)
        assert unseal(server, new_shares[:2]).returncode == 0
        assert (
            server.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"] == "s3cr3t-value"
        )
    finally:
        server.stop()


def test_shamir_server_refuses_to_start_uninitialised(tmp_path: Path) -> None:
    server = shamir_server(tmp_path / "data")
    with pytest.raises(RuntimeError):
        server.start(timeout=20)
    log = (tmp_path / f"server-{server.port}.log").read_text()
    assert "khoa operator init" in log


def awskms_env(kms_server: KhoaServer, key_id: str) -> dict[str, str]:
    return {
        "KHOA_SEAL_BACKEND": "awskms",
        "KHOA_SEAL_AWSKMS_ENDPOINT": kms_server.endpoint,
        "KHOA_SEAL_AWSKMS_REGION": "us-east-1",
        "KHOA_SEAL_AWSKMS_KEY_ID": key_id,
        # the standard AWS credential chain: here, the environment
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }


def test_awskms_auto_unseal_through_another_khoa(server: KhoaServer, tmp_path: Path) -> None:
    kms = server.client("kms")
    key_id = kms.create_key(Description="khoa seal (test)")["KeyMetadata"]["KeyId"]
    node = KhoaServer(tmp_path / "data", extra_env=awskms_env(server, key_id))
    node.start()
    try:
        name = f"awskms-{uuid.uuid4().hex[:8]}"
        node.client("secretsmanager").create_secret(Name=name, SecretString="wrapped-by-kms")
        assert get(node, "/_khoa/ready")[0] == 200
    finally:
        node.stop()
    assert not (node.data_dir / "root.key").exists()
    node.start()  # auto-unseal: Decrypt at start
    try:
        assert (
            node.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"] == "wrapped-by-kms"
        )
    finally:
        node.stop()
    # the wrapping key disabled: the root key cannot be unwrapped, and the error says why
    env = awskms_env(server, key_id)
    with mock.patch.dict(os.environ, {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}):
        wrapper = AwsKmsWrapper(key_id, endpoint=server.endpoint, region="us-east-1")
        root = os.urandom(32)
        blob = wrapper.wrap(root)
        assert wrapper.unwrap(blob) == root
        kms.disable_key(KeyId=key_id)
        try:
            with pytest.raises(SealError, match="DisabledException"):
                wrapper.unwrap(blob)
        finally:
            kms.enable_key(KeyId=key_id)


def test_migrate_seal_keeps_every_secret_readable(server: KhoaServer, tmp_path: Path) -> None:
    node = KhoaServer(tmp_path / "data")  # the file backend
    node.start()
    values = {f"mig-{i}-{uuid.uuid4().hex[:6]}": f"value-{i}" for i in range(3)}
    try:
        sm = node.client("secretsmanager")
        for name, value in values.items():
            sm.create_secret(Name=name, SecretString=value)
        node_kms = node.client("kms")
        key = node_kms.create_key()["KeyMetadata"]["KeyId"]
        blob = node_kms.encrypt(KeyId=key, Plaintext=b"data key")["CiphertextBlob"]
    finally:
        node.stop()
    before = sorted(p.name for p in node.data_dir.iterdir())

    def readable(check: KhoaServer) -> None:
        sm = check.client("secretsmanager")
        for name, value in values.items():
            assert sm.get_secret_value(SecretId=name)["SecretString"] == value
        assert check.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"data key"

    # file -> awskms (a key on the shared server)
    wrapping = server.client("kms").create_key()["KeyMetadata"]["KeyId"]
    env = awskms_env(server, wrapping)
    moved = operator(node, "migrate-seal", "--to", "awskms", "--data-dir", str(node.data_dir), env=env)
    assert moved.returncode == 0, moved.stderr
    assert not (node.data_dir / "root.key").exists() and "root.key" in before
    node.extra_env = env
    node.start()
    try:
        readable(node)
    finally:
        node.stop()
    # awskms -> shamir, then shamir -> file
    moved = operator(
        node,
        "migrate-seal",
        "--to",
        "shamir",
        "--key-shares",
        "3",
        "--key-threshold",
        "2",
        "--data-dir",
        str(node.data_dir),
        env=env,
    )
    assert moved.returncode == 0, moved.stderr
    shares = moved.stdout.split()
    assert len(shares) == 3
    node.extra_env = {"KHOA_SEAL_BACKEND": "shamir"}
    node.harness = False
    node.start()
    try:
        assert_sealed(node)
        assert unseal(node, shares[1:]).returncode == 0
        readable(node)
    finally:
        node.stop()
    # the old awskms blob is gone: the awskms backend no longer opens it, and says why
    refused = operator(node, "migrate-seal", "--to", "file", "--data-dir", str(node.data_dir), env=env)
    assert refused.returncode == 1 and "2 needed" in refused.stderr  # sealed by shamir now: shares asked


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    reason = softhsm_missing()
    if reason:
        missing_service(reason)
    return SoftHsm(tmp_path_factory.mktemp("seal-softhsm"), label=f"khoa-seal-{uuid.uuid4().hex[:6]}")


def test_pkcs11_wrapper_on_softhsm(hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf))
    monkeypatch.setenv("SEAL_TEST_PIN", hsm.pin)
    label = f"wrap-{uuid.uuid4().hex[:6]}"
    wrapper = Pkcs11Wrapper(hsm.module, hsm.label, label, "SEAL_TEST_PIN")
    with pytest.raises(SealError, match="no AES key labelled"):
        wrapper.unwrap(b"\0" * 60)  # no key yet: unwrapping never creates one
    root = os.urandom(32)
    blob = wrapper.wrap(root)  # creates the key in the token
    assert root not in blob and wrapper.unwrap(blob) == root
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SealError):
        wrapper.unwrap(tampered)
    monkeypatch.setenv("SEAL_TEST_PIN", "wrong-pin-0000")
    with pytest.raises(SealError) as wrong:
        wrapper.unwrap(blob)
    assert "wrong-pin-0000" not in str(wrong.value) and hsm.pin not in str(wrong.value)


def test_pkcs11_auto_unseal_on_softhsm(hsm: SoftHsm, tmp_path: Path) -> None:
    node = KhoaServer(
        tmp_path / "data",
        extra_env={
            "KHOA_SEAL_BACKEND": "pkcs11",
            "KHOA_SEAL_PKCS11_MODULE": hsm.module,
            "KHOA_SEAL_PKCS11_TOKEN_LABEL": hsm.label,
            "KHOA_SEAL_PKCS11_KEY_LABEL": f"root-wrap-{uuid.uuid4().hex[:6]}",
            "KHOA_SEAL_PKCS11_PIN": hsm.pin,
            "SOFTHSM2_CONF": str(hsm.conf),
        },
    )
    # The first start makes the root key and stores it wrapped by the token (the parent process);
    # the worker then builds everything from the stored blob alone: the auto-unseal every restart does.
    node.start()
    name = f"hsm-{uuid.uuid4().hex[:8]}"
    try:
        sm = node.client("secretsmanager")
        sm.create_secret(Name=name, SecretString="wrapped-in-the-hsm")
        assert sm.get_secret_value(SecretId=name)["SecretString"] == "wrapped-in-the-hsm"
        assert get(node, "/_khoa/ready")[0] == 200
    finally:
        node.stop()
    assert not (node.data_dir / "root.key").exists()
    # without the PIN the root key cannot be unwrapped: the server refuses to start, and says why
    del node.extra_env["KHOA_SEAL_PKCS11_PIN"]
    with pytest.raises(RuntimeError):
        node.start(timeout=20)
    log = (tmp_path / f"server-{node.port}.log").read_text()
    assert "KHOA_SEAL_PKCS11_PIN" in log and hsm.pin not in log
