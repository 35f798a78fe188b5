"""External key stores (XKS) through boto3 against a real server.

Most tests talk to an in-test fake XKS proxy that follows AWS's XKS Proxy API specification (v1): it
verifies each request's SigV4 signature with botocore (service ``kms-xks-proxy``), keeps AES-256 keys
by external key id, builds the AES-GCM AAD as the spec says (length-prefixed AAD and ciphertext
metadata), returns ciphertext metadata and the ciphertext data integrity value, and answers the
spec's errors. The last test runs the same story against ``khoa xks-proxy`` on SoftHSM2.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import missing_service
from tests.support.errors import error_code, error_response
from tests.support.server import KhoaServer, free_port
from tests.support.xks import PATH, FakeXksProxy, new_credential


@pytest.fixture
def proxy() -> Iterator[FakeXksProxy]:
    instance = FakeXksProxy().start()
    yield instance
    instance.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create_store(kms: Any, endpoint: str, access_key_id: str, secret: str, path: str = PATH) -> str:
    return str(
        kms.create_custom_key_store(
            CustomKeyStoreName=_name("xks"),
            CustomKeyStoreType="EXTERNAL_KEY_STORE",
            XksProxyUriEndpoint=endpoint,
            XksProxyUriPath=path,
            XksProxyConnectivity="PUBLIC_ENDPOINT",
            XksProxyAuthenticationCredential={"AccessKeyId": access_key_id, "RawSecretAccessKey": secret},
        )["CustomKeyStoreId"]
    )


def store_of(kms: Any, store_id: str) -> dict[str, Any]:
    stores = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    assert len(stores) == 1
    return dict(stores[0])


def connected_store(kms: Any, proxy: FakeXksProxy) -> str:
    store_id = create_store(kms, proxy.endpoint, proxy.access_key_id, proxy.secret)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert store_of(kms, store_id)["ConnectionState"] == "CONNECTED"
    return store_id


def xks_args(store_id: str, external_id: str) -> dict[str, str]:
    return {"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": store_id, "XksKeyId": external_id}


def xks_key(kms: Any, store_id: str, external_id: str) -> str:
    meta = kms.create_key(**xks_args(store_id, external_id))
    return str(meta["KeyMetadata"]["KeyId"])


def seen_bytes(proxy: FakeXksProxy) -> bytes:
    """Everything the proxy was sent, with every Base64 field decoded."""
    out = []
    for _, request in proxy.seen:
        for value in request.values():
            if isinstance(value, str):
                try:
                    out.append(base64.b64decode(value, validate=True))
                except ValueError:
                    out.append(value.encode())
    return b"\n".join(out)


# -- stores ---------------------------------------------------------------------------------------


def test_store_life_cycle(server: KhoaServer, kms: Any, proxy: FakeXksProxy) -> None:
    store_id = create_store(kms, proxy.endpoint, proxy.access_key_id, proxy.secret)
    assert re.fullmatch(r"cks-[0-9a-f]{17}", store_id)
    store = store_of(kms, store_id)
    assert store["ConnectionState"] == "DISCONNECTED"
    assert store["CustomKeyStoreType"] == "EXTERNAL_KEY_STORE"
    assert store["XksProxyConfiguration"] == {
        "Connectivity": "PUBLIC_ENDPOINT",
        "AccessKeyId": proxy.access_key_id,
        "UriEndpoint": proxy.endpoint,
        "UriPath": PATH,
    }
    assert "ConnectionErrorCode" not in store
    # the creation checked the proxy with GetHealthStatus, as CreateCustomKeyStore
    assert proxy.seen[-1][0] == PATH + "/health"
    assert proxy.seen[-1][1]["requestMetadata"]["kmsOperation"] == "CreateCustomKeyStore"
    listed = kms.describe_custom_key_stores()["CustomKeyStores"]
    assert store_id in {s["CustomKeyStoreId"] for s in listed}
    assert proxy.secret not in json.dumps(listed, default=str)
    # the proxy secret is sealed: in no file of the data directory (database, WAL, audit trail)
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert proxy.secret.encode() not in path.read_bytes(), path
    by_name = kms.describe_custom_key_stores(CustomKeyStoreName=store["CustomKeyStoreName"])
    assert by_name["CustomKeyStores"][0]["CustomKeyStoreId"] == store_id

    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert store_of(kms, store_id)["ConnectionState"] == "CONNECTED"
    renamed = _name("renamed")
    kms.update_custom_key_store(CustomKeyStoreId=store_id, NewCustomKeyStoreName=renamed)
    assert store_of(kms, store_id)["CustomKeyStoreName"] == renamed
    # a connected store can only be renamed
    other_id, other_secret = new_credential()
    other = {"AccessKeyId": other_id, "RawSecretAccessKey": other_secret}
    assert error_code(
        kms.update_custom_key_store, CustomKeyStoreId=store_id, XksProxyAuthenticationCredential=other
    ) == ("CustomKeyStoreInvalidStateException")
    assert error_code(kms.delete_custom_key_store, CustomKeyStoreId=store_id) == (
        "CustomKeyStoreInvalidStateException"
    )
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert store_of(kms, store_id)["ConnectionState"] == "DISCONNECTED"
    assert error_code(kms.disconnect_custom_key_store, CustomKeyStoreId=store_id) == (
        "CustomKeyStoreInvalidStateException"
    )
    # new proxy settings are checked against the proxy first (a credential it does not know: refused)
    assert error_code(
        kms.update_custom_key_store, CustomKeyStoreId=store_id, XksProxyAuthenticationCredential=other
    ) == ("XksProxyIncorrectAuthenticationCredentialException")
    assert store_of(kms, store_id)["XksProxyConfiguration"]["AccessKeyId"] == proxy.access_key_id
    proxy.access_key_id, proxy.secret = other_id, other_secret  # the proxy rotates its credential
    kms.update_custom_key_store(CustomKeyStoreId=store_id, XksProxyAuthenticationCredential=other)
    assert store_of(kms, store_id)["XksProxyConfiguration"]["AccessKeyId"] == other_id
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert store_of(kms, store_id)["ConnectionState"] == "CONNECTED"
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    assert error_code(kms.describe_custom_key_stores, CustomKeyStoreId=store_id) == (
        "CustomKeyStoreNotFoundException"
    )


def test_without_operator_networks_a_proxy_must_be_public_https_on_443(
    tmp_path: Path, proxy: FakeXksProxy
) -> None:
    """A tenant cannot aim Khoa at the node's own network: loopback, private and link-local addresses
    (literal or by name), http:// and ports other than 443 are refused unless KHOA_XKS_PROXY_NETWORKS
    allows them. A proxy really listening on loopback is not called (nothing tells what is there)."""
    server = KhoaServer(tmp_path / "data", extra_env={"KHOA_XKS_PROXY_NETWORKS": ""}).start()
    try:
        kms = server.client("kms")
        credential = {"AccessKeyId": proxy.access_key_id, "RawSecretAccessKey": proxy.secret}
        base = {
            "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
            "XksProxyUriPath": PATH,
            "XksProxyConnectivity": "PUBLIC_ENDPOINT",
            "XksProxyAuthenticationCredential": credential,
        }
        port = proxy.endpoint.rsplit(":", 1)[1]
        before = (len(proxy.seen), proxy.bad_signatures)
        for endpoint in (
            proxy.endpoint,
            f"https://127.0.0.1:{port}",
            f"https://localhost:{port}",
            "https://localhost",
            "https://[::1]",
            "https://[::ffff:127.0.0.1]",
            "https://169.254.169.254",
            "https://10.1.2.3",
            "https://192.168.0.10",
            "https://xks.example.com:8443",
        ):
            refused = error_response(
                kms.create_custom_key_store,
                CustomKeyStoreName=_name("inward"),
                XksProxyUriEndpoint=endpoint,
                **base,
            )["Error"]
            assert refused["Code"] == "ValidationException", (endpoint, refused)
        assert (len(proxy.seen), proxy.bad_signatures) == before  # never called
        assert kms.describe_custom_key_stores()["CustomKeyStores"] == []
    finally:
        server.stop()


def test_store_refusals(kms: Any, proxy: FakeXksProxy) -> None:
    credential = {"AccessKeyId": proxy.access_key_id, "RawSecretAccessKey": proxy.secret}
    base = {
        "CustomKeyStoreName": _name("refused"),
        "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
        "XksProxyUriEndpoint": proxy.endpoint,
        "XksProxyUriPath": PATH,
        "XksProxyConnectivity": "PUBLIC_ENDPOINT",
        "XksProxyAuthenticationCredential": credential,
    }
    cloudhsm = error_response(
        kms.create_custom_key_store, CustomKeyStoreName=_name("hsm"), CloudHsmClusterId="cluster-234567abcde"
    )["Error"]
    assert cloudhsm["Code"] == "UnsupportedOperationException"
    assert "EXTERNAL_KEY_STORE" in cloudhsm["Message"]
    explicit = error_response(kms.create_custom_key_store, **{**base, "CustomKeyStoreType": "AWS_CLOUDHSM"})
    assert explicit["Error"]["Code"] == "UnsupportedOperationException"
    assert "EXTERNAL_KEY_STORE" in explicit["Error"]["Message"]
    remote_http = error_response(
        kms.create_custom_key_store, **{**base, "XksProxyUriEndpoint": "http://xks.example.com"}
    )["Error"]
    assert remote_http["Code"] == "ValidationException"
    assert "https" in remote_http["Message"]
    for endpoint in ("ftp://127.0.0.1", "https://host/with/path", "not a url here"):
        assert error_code(kms.create_custom_key_store, **{**base, "XksProxyUriEndpoint": endpoint}) == (
            "ValidationException"
        )
    assert error_code(kms.create_custom_key_store, **{**base, "XksProxyUriPath": "/wrong/path/v1"}) == (
        "ValidationException"
    )
    assert error_code(
        kms.create_custom_key_store,
        **{
            **base,
            "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE",
            "XksProxyVpcEndpointServiceName": "com.amazonaws.vpce.us-east-1.vpce-svc-0123",
        },
    ) in ("UnsupportedOperationException",)
    wrong = {"AccessKeyId": new_credential()[0], "RawSecretAccessKey": proxy.secret}
    assert error_code(kms.create_custom_key_store, **{**base, "XksProxyAuthenticationCredential": wrong}) == (
        "XksProxyIncorrectAuthenticationCredentialException"
    )
    assert proxy.bad_signatures == 1
    dead = f"http://127.0.0.1:{free_port()}"
    assert error_code(kms.create_custom_key_store, **{**base, "XksProxyUriEndpoint": dead}) == (
        "XksProxyUriUnreachableException"
    )
    assert error_code(kms.create_custom_key_store, **{**base, "XksProxyUriPath": "/other/kms/xks/v1"}) == (
        "XksProxyInvalidConfigurationException"
    )
    store_id = create_store(kms, proxy.endpoint, proxy.access_key_id, proxy.secret)
    name = store_of(kms, store_id)["CustomKeyStoreName"]
    assert error_code(kms.create_custom_key_store, **{**base, "CustomKeyStoreName": name}) == (
        "CustomKeyStoreNameInUseException"
    )
    assert error_code(kms.create_custom_key_store, **base) == "XksProxyUriInUseException"
    missing = "cks-0123456789abcdef0"
    for call in (
        kms.connect_custom_key_store,
        kms.disconnect_custom_key_store,
        kms.delete_custom_key_store,
        kms.update_custom_key_store,
        kms.describe_custom_key_stores,
    ):
        assert error_code(call, CustomKeyStoreId=missing) == "CustomKeyStoreNotFoundException"
    kms.delete_custom_key_store(CustomKeyStoreId=store_id)


# -- keys and cryptography ------------------------------------------------------------------------


def test_encrypt_decrypt_reencrypt_data_keys(kms: Any, proxy: FakeXksProxy) -> None:
    store_id = connected_store(kms, proxy)
    external_id = proxy.add_key(_name("ext"))
    key = kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId=external_id, Description="xks"
    )["KeyMetadata"]
    assert key["Origin"] == "EXTERNAL_KEY_STORE"
    assert key["CustomKeyStoreId"] == store_id
    assert key["XksKeyConfiguration"] == {"Id": external_id}
    assert key["KeyState"] == "Enabled"
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["XksKeyConfiguration"] == {"Id": external_id}
    assert proxy.seen[-1][0] == f"{PATH}/keys/{external_id}/metadata"
    assert proxy.seen[-1][1]["requestMetadata"]["kmsOperation"] == "CreateKey"

    plaintext = b"the customer-owned secret " + secrets.token_bytes(16)
    context = {"purpose": "xks-test"}
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]
    path, request = proxy.seen[-1]
    assert path == f"{PATH}/keys/{external_id}/encrypt"
    assert request["encryptionAlgorithm"] == "AES_GCM"
    assert request["ciphertextDataIntegrityValueAlgorithm"] == "SHA_256"
    assert request["requestMetadata"]["kmsKeyArn"] == key["Arn"]
    assert request["requestMetadata"]["kmsOperation"] == "Encrypt"
    assert request["requestMetadata"]["awsPrincipalArn"].startswith("arn:aws:iam::")
    assert request["additionalAuthenticatedData"]
    decrypted = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert decrypted["Plaintext"] == plaintext
    assert decrypted["KeyId"] == key["Arn"]
    assert proxy.seen[-1][0] == f"{PATH}/keys/{external_id}/decrypt"
    assert proxy.seen[-1][1]["ciphertextMetadata"] == base64.b64encode(b"fake-v1").decode()
    assert error_code(kms.decrypt, CiphertextBlob=blob) == "InvalidCiphertextException"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    assert error_code(kms.decrypt, CiphertextBlob=bytes(tampered), EncryptionContext=context) == (
        "InvalidCiphertextException"
    )

    khoa_key = kms.create_key()["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=context,
        DestinationKeyId=khoa_key,
        DestinationEncryptionContext=context,
    )
    assert (
        kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext=context)["Plaintext"]
        == plaintext
    )
    back = kms.re_encrypt(
        CiphertextBlob=moved["CiphertextBlob"], DestinationKeyId=key["KeyId"], SourceEncryptionContext=context
    )
    assert back["KeyId"] == key["Arn"]
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"])["Plaintext"] == plaintext

    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    bare = kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], NumberOfBytes=64)
    assert "Plaintext" not in bare
    assert len(kms.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 64

    # Double encryption: the proxy never saw a plaintext or a data key, only Khoa ciphertexts.
    sent = seen_bytes(proxy)
    assert plaintext not in sent
    assert data_key["Plaintext"] not in sent
    # ... and without the external key, Khoa's own material cannot open the blob.
    del proxy.keys[external_id]
    failure = error_response(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)["Error"]
    assert failure["Code"] == "KMSInvalidStateException"
    assert "not found in its external key manager" in failure["Message"]
    proxy.keys[external_id] = AESGCM.generate_key(256)  # same id, other key material: still no
    assert (
        error_code(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context) == "KMSInvalidStateException"
    )


def test_secrets_manager_envelopes_use_the_external_key(sm: Any, kms: Any, proxy: FakeXksProxy) -> None:
    store_id = connected_store(kms, proxy)
    key_id = xks_key(kms, store_id, proxy.add_key(_name("ext")))
    value = "s3cret-" + secrets.token_hex(8)
    arn = sm.create_secret(Name=_name("xks-secret"), SecretString=value, KmsKeyId=key_id)["ARN"]
    encrypts = [p for p, _ in proxy.seen if p.endswith("/encrypt")]
    assert encrypts, "the secret's data key was not sealed by the external key"
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value
    assert value.encode() not in seen_bytes(proxy)
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    # as AWS Secrets Manager answers when KMS cannot decrypt the secret
    assert error_code(sm.get_secret_value, SecretId=arn) == "DecryptionFailure"
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value


def test_create_key_checks(kms: Any, proxy: FakeXksProxy) -> None:
    store_id = create_store(kms, proxy.endpoint, proxy.access_key_id, proxy.secret)
    external_id = proxy.add_key(_name("ext"))
    assert (
        error_code(kms.create_key, **xks_args(store_id, external_id)) == "CustomKeyStoreInvalidStateException"
    )
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert error_code(kms.create_key, **xks_args(store_id, "no-such-key")) == "XksKeyNotFoundException"
    proxy.disabled.add(external_id)
    assert (
        error_code(kms.create_key, **xks_args(store_id, external_id)) == "XksKeyInvalidConfigurationException"
    )
    proxy.disabled.discard(external_id)
    assert error_code(kms.create_key, Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id) == (
        "ValidationException"
    )
    assert (
        error_code(kms.create_key, Origin="EXTERNAL_KEY_STORE", XksKeyId=external_id) == "ValidationException"
    )
    assert (
        error_code(
            kms.create_key,
            Origin="EXTERNAL_KEY_STORE",
            CustomKeyStoreId=store_id,
            XksKeyId=external_id,
            KeySpec="RSA_2048",
            KeyUsage="ENCRYPT_DECRYPT",
        )
        == "UnsupportedOperationException"
    )
    hsm = error_response(kms.create_key, Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["Error"]
    assert hsm["Code"] == "UnsupportedOperationException"
    assert "EXTERNAL_KEY_STORE" in hsm["Message"]
    assert (
        error_code(kms.create_key, **xks_args("cks-0123456789abcdef0", external_id))
        == "CustomKeyStoreNotFoundException"
    )
    key_id = xks_key(kms, store_id, external_id)
    assert error_code(kms.create_key, **xks_args(store_id, external_id)) == "XksKeyAlreadyInUseException"
    assert error_code(kms.generate_random, NumberOfBytes=16, CustomKeyStoreId=store_id) == (
        "UnsupportedOperationException"
    )
    assert error_code(kms.generate_random, NumberOfBytes=16, CustomKeyStoreId="cks-0123456789abcdef0") == (
        "CustomKeyStoreNotFoundException"
    )
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert (
        error_code(kms.delete_custom_key_store, CustomKeyStoreId=store_id) == "CustomKeyStoreHasCMKsException"
    )
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)


def test_disconnected_store_and_stopped_proxy(server: KhoaServer, kms: Any) -> None:
    port = free_port()
    proxy = FakeXksProxy().start(port)
    try:
        store_id = connected_store(kms, proxy)
        key_id = xks_key(kms, store_id, proxy.add_key(_name("ext")))
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"payload")["CiphertextBlob"]

        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
        for call, args in (
            (kms.encrypt, {"KeyId": key_id, "Plaintext": b"x"}),
            (kms.decrypt, {"CiphertextBlob": blob}),
        ):
            failure = error_response(call, **args)["Error"]
            assert failure["Code"] == "KMSInvalidStateException"
            assert "not connected" in failure["Message"]
        assert (
            error_code(kms.generate_data_key, KeyId=key_id, KeySpec="AES_256") == "KMSInvalidStateException"
        )

        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"payload"

        proxy.stop()  # the proxy goes away while the store is connected
        for call, args in (
            (kms.encrypt, {"KeyId": key_id, "Plaintext": b"x"}),
            (kms.decrypt, {"CiphertextBlob": blob}),
        ):
            failure = error_response(call, **args)["Error"]
            assert failure["Code"] == "KMSInvalidStateException"
            assert "cannot communicate with the external key store proxy" in failure["Message"]
        # reconnecting fails: the store shows why
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        store = store_of(kms, store_id)
        assert store["ConnectionState"] == "FAILED"
        assert store["ConnectionErrorCode"] == "XKS_PROXY_NOT_REACHABLE"
        assert error_code(kms.connect_custom_key_store, CustomKeyStoreId=store_id) == (
            "CustomKeyStoreInvalidStateException"
        )
        with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(
            r'^khoa_xks_proxy_errors_total\{error="Unreachable",operation="Encrypt"\} [1-9]', metrics, re.M
        )
        assert re.search(
            r'^khoa_xks_proxy_request_duration_seconds_count\{operation="Decrypt"\} [1-9]', metrics, re.M
        )

        before = raised_alerts(server)
        server.run_jobs()
        assert raised_alerts(server) == before + 1
        alerts = json.loads(_khoa(server, "alerts", "list", "--json").stdout)
        raised = [a for a in alerts if a["rule"] == "xks-proxy-unavailable" and a["region"] == "us-east-1"]
        assert raised, alerts
        assert raised[0]["severity"] == "high"
        assert proxy.secret not in json.dumps(raised)

        # the proxy comes back on the same address: disconnect, connect, and the key works again
        proxy.start(port)
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert store_of(kms, store_id)["ConnectionState"] == "CONNECTED"
        assert "ConnectionErrorCode" not in store_of(kms, store_id)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"payload"
    finally:
        proxy.stop()


def raised_alerts(server: KhoaServer) -> float:
    """How many xks-proxy-unavailable alerts the server has raised (its /metrics)."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^khoa_alerts_raised_total\{rule="xks-proxy-unavailable"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def _khoa(server: KhoaServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args, "--data-dir", str(server.data_dir)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


# -- end to end: khoa xks-proxy on SoftHSM2 -------------------------------------------------------

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
E2E_REGION = "eu-west-2"  # its own region: alerts are deduplicated per account and region


class RealProxy:
    def __init__(self, directory: Path) -> None:
        module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
        if module is None or shutil.which("softhsm2-util") is None:
            missing_service("SoftHSM2 (Debian package softhsm2) is not installed")
        assert module is not None
        self.module = module
        (directory / "tokens").mkdir()
        conf = directory / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n")
        self.access_key_id, self.secret = new_credential()
        self.port = free_port()
        self.env = {
            **os.environ,
            "SOFTHSM2_CONF": str(conf),
            "KHOA_XKS_PIN": "1234",
            "KHOA_XKS_SECRET_ACCESS_KEY": self.secret,
        }
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                "khoa-xks",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.log = directory / "proxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _cli(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "khoa",
            "xks-proxy",
            *args,
            "--pkcs11-module",
            self.module,
            "--token-label",
            "khoa-xks",
        ]

    def create_key(self, label: str) -> subprocess.Popen[bytes]:
        """Start creating an AES-256 key labelled ``label`` in the token (the caller waits for it)."""
        return subprocess.Popen(
            self._cli("create-key", label), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RealProxy:
        args = self._cli(
            "--host", "127.0.0.1", "--port", str(self.port), "--access-key-id", self.access_key_id
        )
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if b"xks-proxy listening on" in self.log.read_bytes():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"khoa xks-proxy did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def real_proxy(tmp_path: Path) -> Iterator[RealProxy]:
    if (
        not Path("src/khoa/xks_proxy").exists()
        and not (Path(__file__).parents[2] / "src/khoa/xks_proxy").exists()
    ):
        missing_service("khoa xks-proxy is not part of this tree")
    instance = RealProxy(tmp_path)
    yield instance
    instance.stop()


def test_end_to_end_with_khoa_xks_proxy_on_softhsm(server: KhoaServer, real_proxy: RealProxy) -> None:
    kms = server.client("kms", region=E2E_REGION)
    external_id = _name("hsm-key")
    # Before the proxy starts, not beside it: SoftHSM's file token, opened by two processes at once
    # while one writes a key, failed the write now and then (CKR_GENERAL_ERROR).
    creating = real_proxy.create_key(external_id)
    output, _ = creating.communicate(timeout=60)
    assert creating.returncode == 0, output
    real_proxy.start()
    store_id = create_store(kms, real_proxy.endpoint, real_proxy.access_key_id, real_proxy.secret)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert store_of(kms, store_id)["ConnectionState"] == "CONNECTED"
    key_id = xks_key(kms, store_id, external_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["XksKeyConfiguration"] == {"Id": external_id}
    assert error_code(kms.create_key, **xks_args(store_id, "not-in-the-token")) == "XksKeyNotFoundException"

    context = {"tenant": "a"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"held by the HSM", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"held by the HSM"
    assert error_code(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"tenant": "b"}) == (
        "InvalidCiphertextException"
    )
    khoa_key = kms.create_key()["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=context, DestinationKeyId=khoa_key)[
        "CiphertextBlob"
    ]
    back = kms.re_encrypt(CiphertextBlob=moved, DestinationKeyId=key_id, DestinationEncryptionContext=context)
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"], EncryptionContext=context)["Plaintext"] == (
        b"held by the HSM"
    )
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    bare = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_128")
    assert len(kms.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 16

    # The database holds the external key's label, never its material: the token holds that.
    with sqlite3.connect(f"file:{server.data_dir / 'khoa.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT xks_key_id FROM kms_xks_keys WHERE key_id = ?", (key_id,)).fetchall()
    assert rows == [(external_id,)]

    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert (
        error_code(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context) == "KMSInvalidStateException"
    )
    assert error_code(kms.encrypt, KeyId=key_id, Plaintext=b"x") == "KMSInvalidStateException"
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"held by the HSM"

    # Without the HSM, Khoa's database and root key alone cannot decrypt.
    real_proxy.stop()
    failure = error_response(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)["Error"]
    assert failure["Code"] == "KMSInvalidStateException"
    assert "external key store proxy" in failure["Message"]
    assert error_code(kms.generate_data_key, KeyId=key_id, KeySpec="AES_256") == "KMSInvalidStateException"
    before = raised_alerts(server)
    server.run_jobs()
    assert raised_alerts(server) == before + 1


def test_a_silent_proxy_holds_only_the_calls_that_wait_on_it(server: KhoaServer, kms: Any, sm: Any) -> None:
    """An XKS proxy that goes silent (connections accepted, nothing answered) holds the calls that use
    its keys for the proxy timeout each, and nothing else: they wait on request threads, not on the
    event loop, so the probes and calls served from the node's own keys answer at once meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.tcpproxy import TcpProxy

    proxy = FakeXksProxy().start()
    relay = TcpProxy("127.0.0.1", int(proxy.endpoint.rsplit(":", 1)[1]))
    try:
        store_id = create_store(kms, f"http://127.0.0.1:{relay.port}", proxy.access_key_id, proxy.secret)
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        xks_key_id = xks_key(kms, store_id, proxy.add_key(_name("ext")))
        own_key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        secret_name = _name("loop")
        sm.create_secret(Name=secret_name, SecretString="fast-path")
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=xks_key_id, Plaintext=b"x")["CiphertextBlob"])

        relay.set_mode("blackhole")
        waiting = 6
        with ThreadPoolExecutor(waiting) as pool:
            started = time.monotonic()
            held = [
                pool.submit(error_response, kms.encrypt, KeyId=xks_key_id, Plaintext=b"x")
                for _ in range(waiting)
            ]
            time.sleep(0.3)  # every held call is waiting on the proxy now
            slowest = 0.0
            while not all(call.done() for call in held):
                begun = time.monotonic()
                with urllib.request.urlopen(f"{server.endpoint}/_khoa/health", timeout=10) as response:
                    assert response.status == 200
                assert kms.decrypt(
                    CiphertextBlob=kms.encrypt(KeyId=own_key_id, Plaintext=b"y")["CiphertextBlob"]
                )
                assert sm.get_secret_value(SecretId=secret_name)["SecretString"] == "fast-path"
                slowest = max(slowest, time.monotonic() - begun)
                time.sleep(0.05)
            failures = [call.result()["Error"] for call in held]
            elapsed = time.monotonic() - started
        # On the loop, six calls would have held everything for six proxy timeouts in turn.
        assert slowest < 1.0, slowest
        assert elapsed < 2 * 2.0 + 2, elapsed  # the held calls waited side by side
        for failure in failures:
            assert failure["Code"] == "KMSInvalidStateException"
            assert "did not respond in time" in failure["Message"]

        relay.set_mode("pass")
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=xks_key_id, Plaintext=b"z")["CiphertextBlob"])
    finally:
        relay.close()
        proxy.stop()
