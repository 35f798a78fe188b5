"""``khoa xks-proxy`` on SoftHSM2, through the wire as an XKS client (AWS KMS) calls it: SigV4-signed
POSTs (botocore's SigV4Auth, service ``kms-xks-proxy``) to ``[prefix]/kms/xks/v1/...``.

One token and one proxy process for the module; a key made with ``khoa xks-proxy create-key``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import missing_service
from tests.support.xks_proxy import SoftHsm, XksProxy, signed_post, softhsm_missing

PREFIX = "/tenant-a"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def metadata(operation: str = "Encrypt", **extra: str) -> dict[str, str]:
    return {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": operation,
        "kmsRequestId": str(uuid.uuid4()),
        **extra,
    }


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    reason = softhsm_missing()
    if reason:
        missing_service(reason)
    return SoftHsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="module")
def started(hsm: SoftHsm) -> Iterator[tuple[XksProxy, str]]:
    """The module's proxy and its key: the key is created (khoa xks-proxy create-key) before the proxy
    starts; the proxy finds keys by label at each request. Not while it starts: SoftHSM's file store
    rewrites the token's file when the proxy logs in, and another process reading it at that moment
    can find it unreadable and the token absent (SoftHSMv2 issue 757); a hardware token does not."""
    label = f"xks-key-{uuid.uuid4().hex[:8]}"
    created = hsm.create_key(label)
    assert created.returncode == 0, created.stderr
    assert "AES_256" in created.stdout
    instance = XksProxy(hsm, path_prefix=PREFIX).start()
    try:
        yield instance, label
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def key_id(started: tuple[XksProxy, str]) -> str:
    return started[1]


@pytest.fixture(scope="module")
def proxy(started: tuple[XksProxy, str]) -> XksProxy:
    return started[0]


def encrypt(proxy: XksProxy, key_id: str, plaintext: bytes, aad: bytes | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "requestMetadata": metadata("Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
        **extra,
    }
    if aad is not None:
        body["additionalAuthenticatedData"] = b64(aad)
    return proxy.post(f"/keys/{key_id}/encrypt", body)


def decrypt_body(sealed: dict[str, Any], aad: bytes | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestMetadata": metadata("Decrypt"),
        "ciphertext": sealed["ciphertext"],
        "initializationVector": sealed["initializationVector"],
        "authenticationTag": sealed["authenticationTag"],
        "encryptionAlgorithm": "AES_GCM",
    }
    if aad is not None:
        body["additionalAuthenticatedData"] = b64(aad)
    body.update(changes)
    return body


def flip(text: str, index: int = 0) -> str:
    raw = bytearray(unb64(text))
    raw[index] ^= 0x01
    return b64(bytes(raw))


def test_health_status_reports_the_token(proxy: XksProxy, hsm: SoftHsm) -> None:
    status, body = proxy.post(
        "/health", {"requestMetadata": {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": "KmsHealthCheck"}}
    )
    assert status == 200, body
    assert body["xksProxyFleetSize"] >= 1
    assert body["xksProxyVendor"] and body["xksProxyModel"]
    assert "SoftHSM" in body["ekmVendor"]
    [detail] = body["ekmFleetDetails"]
    assert detail["healthStatus"] == "ACTIVE"
    assert "SoftHSM" in detail["model"] and detail["id"]
    # An unknown kmsOperation is accepted (the spec: never reject one as invalid).
    status, _ = proxy.post(
        "/health", {"requestMetadata": {"kmsRequestId": "opaque", "kmsOperation": "SomeFutureOperation"}}
    )
    assert status == 200


def test_key_metadata_of_the_created_key(proxy: XksProxy, key_id: str) -> None:
    status, body = proxy.post(
        f"/keys/{key_id}/metadata", {"requestMetadata": metadata("CreateKey") | {"kmsKeyArn": ""}}
    )
    assert status == 200, body
    assert body == {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"}


def test_round_trip_with_aad_and_integrity_value(proxy: XksProxy, key_id: str) -> None:
    plaintext = b"a data key \x00\xff" * 3
    aad = b"project=nile,department=marketing"
    status, sealed = encrypt(proxy, key_id, plaintext, aad, ciphertextDataIntegrityValueAlgorithm="SHA_256")
    assert status == 200, sealed
    iv, ciphertext, tag = (
        unb64(sealed["initializationVector"]),
        unb64(sealed["ciphertext"]),
        unb64(sealed["authenticationTag"]),
    )
    assert len(iv) == 12 and len(tag) == 16 and len(ciphertext) == len(plaintext)
    assert ciphertext != plaintext
    assert "ciphertextMetadata" not in sealed
    # Appendix C: SHA-256 over aad || metadata || iv || ciphertext || tag, computed here independently.
    assert (
        unb64(sealed["ciphertextDataIntegrityValue"]) == hashlib.sha256(aad + iv + ciphertext + tag).digest()
    )
    status, opened = proxy.post(f"/keys/{key_id}/decrypt", decrypt_body(sealed, aad))
    assert status == 200, opened
    assert unb64(opened["plaintext"]) == plaintext
    # Each encryption draws a fresh IV.
    _, again = encrypt(proxy, key_id, plaintext, aad)
    assert again["initializationVector"] != sealed["initializationVector"]
    assert "ciphertextDataIntegrityValue" not in again


def test_round_trip_without_aad_and_largest_required_sizes(proxy: XksProxy, key_id: str) -> None:
    plaintext = bytes(range(256)) * 17  # 4352 bytes: above the 4300 the spec requires
    status, sealed = encrypt(proxy, key_id, plaintext)
    assert status == 200, sealed
    status, opened = proxy.post(f"/keys/{key_id}/decrypt", decrypt_body(sealed))
    assert status == 200 and unb64(opened["plaintext"]) == plaintext
    big_aad = b"x" * 8192
    status, sealed = encrypt(proxy, key_id, b"k" * 32, big_aad)
    assert status == 200, sealed
    status, opened = proxy.post(f"/keys/{key_id}/decrypt", decrypt_body(sealed, big_aad))
    assert status == 200 and unb64(opened["plaintext"]) == b"k" * 32


def test_tampering_is_refused_as_invalid_ciphertext(proxy: XksProxy, key_id: str) -> None:
    aad = b"context"
    status, sealed = encrypt(proxy, key_id, b"secret data key material!", aad)
    assert status == 200
    tampered = [
        decrypt_body(sealed, aad, ciphertext=flip(sealed["ciphertext"], 3)),
        decrypt_body(sealed, aad, authenticationTag=flip(sealed["authenticationTag"], 15)),
        decrypt_body(sealed, aad, initializationVector=flip(sealed["initializationVector"])),
        decrypt_body(sealed, b"other context"),
        decrypt_body(sealed),  # AAD dropped
        decrypt_body(sealed, aad, ciphertextMetadata=b64(b"v1")),  # metadata added
        # AAD moved into the metadata: the lengths in the token's AAD keep the two apart.
        decrypt_body(sealed, None, ciphertextMetadata=b64(aad)),
        decrypt_body(sealed, aad, authenticationTag=b64(unb64(sealed["authenticationTag"])[:12])),
        decrypt_body(sealed, aad, initializationVector=b64(b"\x00" * 8)),
        decrypt_body(sealed, aad, ciphertextMetadata=b64(b"m" * 21)),
    ]
    for body in tampered:
        status, error = proxy.post(f"/keys/{key_id}/decrypt", body)
        assert (status, error.get("errorName")) == (400, "InvalidCiphertextException"), body
        assert "plaintext" not in error


def test_unknown_key_is_not_found(proxy: XksProxy, key_id: str) -> None:
    status, sealed = encrypt(proxy, key_id, b"data")
    missing = f"no-such-key-{uuid.uuid4().hex[:6]}"
    for operation, body in (
        ("metadata", {"requestMetadata": metadata("DescribeKey")}),
        (
            "encrypt",
            {"requestMetadata": metadata(), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"},
        ),
        ("decrypt", decrypt_body(sealed)),
    ):
        status, error = proxy.post(f"/keys/{missing}/{operation}", body)
        assert (status, error["errorName"]) == (404, "KeyNotFoundException"), operation


def test_signature_problems_are_authentication_failures(proxy: XksProxy, key_id: str) -> None:
    body = {"requestMetadata": metadata("DescribeKey")}
    path = f"/keys/{key_id}/metadata"
    attempts = [
        proxy.post(path, body, secret_access_key="not-the-secret"),
        proxy.post(path, body, access_key_id="UNKNOWNACCESSKEYID234567"),
        proxy.post(path, body, service="kms"),
        signed_post(f"{proxy.base_url}{path}", body, None, None),  # unsigned
    ]
    for status, error in attempts:
        assert (status, error["errorName"]) == (401, "AuthenticationFailedException"), error
    # Any Region in the credential scope is accepted: it is the caller's (KMS's) Region.
    status, _ = proxy.post(path, body, region="eu-west-1")
    assert status == 200


def test_a_body_changed_after_signing_is_refused(proxy: XksProxy, key_id: str) -> None:

    url = f"{proxy.base_url}/keys/{key_id}/encrypt"
    signed = json.dumps(
        {"requestMetadata": metadata(), "plaintext": b64(b"one"), "encryptionAlgorithm": "AES_GCM"}
    ).encode()
    request = AWSRequest(method="POST", url=url, data=signed, headers={"Content-Type": "application/json"})
    SigV4Auth(
        Credentials(proxy.access_key_id, proxy.secret_access_key), "kms-xks-proxy", "us-east-1"
    ).add_auth(request)
    swapped = signed.replace(b64(b"one").encode(), b64(b"two").encode())
    headers = dict(request.prepare().headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(url, data=swapped, headers=headers, method="POST"), timeout=30
        )
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["errorName"] == "AuthenticationFailedException"


def test_bad_requests_get_the_specs_errors(proxy: XksProxy, key_id: str) -> None:
    encrypt_path = f"/keys/{key_id}/encrypt"
    cases: list[tuple[str, Any, int, str]] = [
        (encrypt_path, b"not json", 400, "ValidationException"),
        (
            encrypt_path,
            {"plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"},
            400,
            "ValidationException",
        ),
        (
            encrypt_path,
            {
                "requestMetadata": {"kmsOperation": "Encrypt"},
                "plaintext": b64(b"x"),
                "encryptionAlgorithm": "AES_GCM",
            },
            400,
            "ValidationException",
        ),
        (
            encrypt_path,
            {"requestMetadata": metadata(), "encryptionAlgorithm": "AES_GCM"},
            400,
            "ValidationException",
        ),
        (
            encrypt_path,
            {"requestMetadata": metadata(), "plaintext": "%%%not-base64", "encryptionAlgorithm": "AES_GCM"},
            400,
            "ValidationException",
        ),
        (encrypt_path, {"requestMetadata": metadata(), "plaintext": b64(b"x")}, 400, "ValidationException"),
        (
            encrypt_path,
            {"requestMetadata": metadata(), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_CBC"},
            501,
            "UnsupportedOperationException",
        ),
        (
            encrypt_path,
            {
                "requestMetadata": metadata(),
                "plaintext": b64(b"x"),
                "encryptionAlgorithm": "AES_GCM",
                "ciphertextDataIntegrityValueAlgorithm": "MD5",
            },
            501,
            "UnsupportedOperationException",
        ),
        (f"/keys/{key_id}/sign", {"requestMetadata": metadata()}, 404, "InvalidUriPathException"),
        ("/keys", {"requestMetadata": metadata()}, 404, "InvalidUriPathException"),
        (f"/keys/{'k' * 129}/encrypt", {"requestMetadata": metadata()}, 400, "ValidationException"),
    ]
    for path, body, expected_status, expected_name in cases:
        status, error = proxy.post(path, body)
        assert (status, error.get("errorName")) == (expected_status, expected_name), (path, body)
    # Without the configured path prefix the API is not there.
    status, error = signed_post(
        f"{proxy.endpoint}/kms/xks/v1/health",
        {"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}},
        proxy.access_key_id,
        proxy.secret_access_key,
    )
    assert (status, error["errorName"]) == (404, "InvalidUriPathException")
    # GET on an API path: 405 (the spec: every XKS call is a POST).
    status, error = signed_post(
        f"{proxy.base_url}/health", b"", proxy.access_key_id, proxy.secret_access_key, method="GET"
    )
    assert status == 405


def test_key_material_cannot_be_extracted_from_the_token(hsm: SoftHsm, key_id: str) -> None:
    """Logged in as the user, the key's value cannot be read, and it cannot be wrapped out."""
    script = textwrap.dedent(
        f"""
        import json, pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass, MechanismFlag, Mechanism
        from pkcs11 import exceptions as e
        lib = pkcs11.lib({hsm.module!r})
        token = lib.get_token(token_label={hsm.label!r})
        out = {{}}
        with token.open(rw=True, user_pin={hsm.pin!r}) as session:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label={key_id!r})
            out["sensitive"] = key[Attribute.SENSITIVE]
            out["extractable"] = key[Attribute.EXTRACTABLE]
            out["never_extractable"] = key[Attribute.NEVER_EXTRACTABLE]
            try:
                key[Attribute.VALUE]
                out["value"] = "READ"
            except e.PKCS11Error as exc:
                out["value"] = type(exc).__name__
            wrapper = session.generate_key(KeyType.AES, 256, store=False,
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT)
            try:
                wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
                out["wrap"] = "WRAPPED"
            except e.PKCS11Error as exc:
                out["wrap"] = type(exc).__name__
            try:
                key[Attribute.EXTRACTABLE] = True
                out["make_extractable"] = "CHANGED"
            except e.PKCS11Error as exc:
                out["make_extractable"] = type(exc).__name__
        print(json.dumps(out))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=hsm.env(), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    facts = json.loads(run.stdout)
    assert facts["sensitive"] is True
    assert facts["extractable"] is False
    assert facts["never_extractable"] is True
    assert facts["value"] == "AttributeSensitive"
    assert facts["wrap"] not in ("WRAPPED",)
    assert facts["make_extractable"] != "CHANGED"


def test_create_key_refuses_an_existing_label(hsm: SoftHsm, key_id: str) -> None:
    again = hsm.create_key(key_id)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_health_reflects_an_absent_token_and_a_wrong_pin_stops_the_start(
    hsm: SoftHsm, tmp_path: Path
) -> None:
    """A proxy whose token is not present serves, says UNAVAILABLE and fails operations with 500; a PIN
    the token refuses stops the start (retrying would lock the token)."""
    absent = SoftHsm.__new__(SoftHsm)
    absent.__dict__.update(hsm.__dict__)
    absent.label = f"absent-{uuid.uuid4().hex[:6]}"
    absent.directory = tmp_path
    orphan = XksProxy(absent).start()
    try:
        status, body = orphan.post(
            "/health", {"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}}
        )
        assert status == 200
        assert body["ekmFleetDetails"][0]["healthStatus"] == "UNAVAILABLE"
        status, error = orphan.post(
            "/keys/any-key/encrypt",
            {"requestMetadata": metadata(), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"},
        )
        assert (status, error["errorName"]) == (500, "InternalException")

        with pytest.raises(urllib.error.HTTPError) as ping:
            urllib.request.urlopen(f"{orphan.endpoint}/ping", timeout=10)
        assert ping.value.code == 503
    finally:
        orphan.stop()
    env = hsm.env()
    env["KHOA_XKS_PIN"] = "wrong-pin"
    env["KHOA_XKS_ACCESS_KEY_ID"] = "AKIDXKSTESTWRONGPIN2345"
    env["KHOA_XKS_SECRET_ACCESS_KEY"] = "secret"
    refused = subprocess.run(
        [sys.executable, "-m", "khoa", "xks-proxy", *hsm.token_options(), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stderr
    assert "refused the PIN" in refused.stderr
    assert "wrong-pin" not in refused.stderr


def _certificate(
    subject: str, issuer_key: Any, issuer: Any | None, *, ca: bool = False, dns: str | None = None
) -> tuple[Any, Any]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    cert = builder.sign(issuer_key if issuer is not None else key, hashes.SHA256())
    return cert, key


def _write_pem(directory: Path, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_mutual_tls_requires_a_client_certificate_with_the_configured_subject(
    hsm: SoftHsm, key_id: str, tmp_path: Path
) -> None:
    import ssl

    ca_cert, ca_key = _certificate("Test XKS CA", None, None, ca=True)
    ca_path, _ = _write_pem(tmp_path, "ca", ca_cert, ca_key)
    server_cert, server_key = _certificate("localhost", ca_key, ca_cert, dns="localhost")
    server_paths = _write_pem(tmp_path, "server", server_cert, server_key)
    kms_subject = "cks.kms.us-east-1.amazonaws.com"
    good = _write_pem(tmp_path, "kms", *_certificate(kms_subject, ca_key, ca_cert))
    wrong_name = _write_pem(tmp_path, "other", *_certificate("someone.example", ca_key, ca_cert))
    other_ca_cert, other_ca_key = _certificate("Other CA", None, None, ca=True)
    wrong_ca = _write_pem(tmp_path, "foreign", *_certificate(kms_subject, other_ca_key, other_ca_cert))

    def client(paths: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca_path))
        if paths is not None:
            context.load_cert_chain(str(paths[0]), str(paths[1]))
        return context

    proxy = XksProxy(
        hsm,
        extra=[
            "--tls-cert",
            str(server_paths[0]),
            "--tls-key",
            str(server_paths[1]),
            "--tls-client-ca",
            str(ca_path),
            "--tls-client-subject",
            kms_subject,
        ],
        client_tls=client(good),
    ).start()
    try:
        body = {"requestMetadata": metadata("DescribeKey")}
        status, answer = proxy.post(f"/keys/{key_id}/metadata", body)
        assert status == 200, answer
        assert proxy.base_url.startswith("https://")
        for paths in (None, wrong_name, wrong_ca):
            with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError, OSError)):
                signed_post(
                    f"{proxy.base_url}/keys/{key_id}/metadata",
                    body,
                    proxy.access_key_id,
                    proxy.secret_access_key,
                    context=client(paths),
                )
        assert "certificate subject CN is not" in proxy.log()  # the wrong name: refused by the proxy
    finally:
        proxy.stop()
