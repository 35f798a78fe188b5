"""No secret value, plaintext, data key, password or secret access key reaches the audit trail.

One sweep over the operations of every service that take or return secrets, with a unique marker in
every secret they are given and a note of every secret they return; then every record (through
LookupEvents, in each Region used) and every byte under the data directory (the database and its
journal, and any trail files) is searched for each of them, raw, base64 and hex.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.integration.test_cloudtrail import all_events, seed_role
from tests.support.errors import refused
from tests.support.identity import new_user
from tests.support.server import KhoaServer

HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"


class Secrets:
    """Every secret the sweep handled, to be searched for afterwards."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def marker(self, label: str) -> str:
        value = f"LEAK-{label}-{uuid.uuid4().hex}"
        self.values.append(value.encode())
        return value

    def returned(self, value: str | bytes) -> None:
        self.values.append(value.encode() if isinstance(value, str) else bytes(value))

    def forms(self) -> list[bytes]:
        out: list[bytes] = []
        for value in self.values:
            out.append(value)
            out.append(base64.b64encode(value))
            out.append(value.hex().encode())
        return out


def sweep_kms(server: KhoaServer, s: Secrets) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=s.marker("encrypt").encode(), EncryptionContext={"app": "a"})
    decrypted = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"app": "a"})
    s.returned(decrypted["Plaintext"])
    kms.re_encrypt(
        CiphertextBlob=blob["CiphertextBlob"], SourceEncryptionContext={"app": "a"}, DestinationKeyId=other
    )
    data_key = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    s.returned(data_key["Plaintext"])
    kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
    kms.generate_data_key(KeyId=key, NumberOfBytes=48)["Plaintext"]
    kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_128")
    pair = kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256")
    s.returned(pair["PrivateKeyPlaintext"])
    s.returned(kms.generate_random(NumberOfBytes=32)["Plaintext"])

    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    message = s.marker("mac").encode()
    mac = kms.generate_mac(KeyId=mac_key, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]
    kms.verify_mac(KeyId=mac_key, Message=message, MacAlgorithm="HMAC_SHA_256", Mac=mac)

    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    message = s.marker("sign").encode()
    signature = kms.sign(KeyId=signing, Message=message, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    kms.verify(KeyId=signing, Message=message, Signature=signature, SigningAlgorithm="ECDSA_SHA_256")

    agreement = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    shared = kms.derive_shared_secret(
        KeyId=agreement,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=peer.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    s.returned(shared["SharedSecret"])

    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(
        KeyId=external, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    material = s.marker("material").encode()[:32]
    public = serialization.load_der_public_key(params["PublicKey"])
    wrapped = public.encrypt(  # type: ignore[union-attr]
        material,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    kms.import_key_material(
        KeyId=external,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )

    # Refused calls carry secrets too.
    refused(kms.encrypt, KeyId=str(uuid.uuid4()), Plaintext=s.marker("missing-key").encode())
    refused(kms.encrypt, KeyId=mac_key, Plaintext=s.marker("wrong-usage").encode())
    forged = server.client("kms", aws_secret_access_key="wrong-secret-access-key-00000000000000000")
    refused(forged.encrypt, KeyId=key, Plaintext=s.marker("forged").encode())


def sweep_secretsmanager(server: KhoaServer, s: Secrets) -> None:
    sm = server.client("secretsmanager")
    name = f"leak-{uuid.uuid4().hex[:8]}"
    created = sm.create_secret(Name=name, SecretString=s.marker("create"))
    sm.put_secret_value(SecretId=name, SecretString=s.marker("put"))
    sm.put_secret_value(SecretId=name, SecretBinary=s.marker("binary").encode())
    sm.update_secret(SecretId=name, SecretString=s.marker("update"), Description="not secret")
    sm.get_secret_value(SecretId=name)
    sm.get_secret_value(SecretId=created["ARN"], VersionStage="AWSPREVIOUS")
    sm.batch_get_secret_value(SecretIdList=[name])
    sm.list_secret_version_ids(SecretId=name)
    s.returned(sm.get_random_password(PasswordLength=40)["RandomPassword"])
    s.returned(sm.get_random_password(PasswordLength=24, ExcludePunctuation=True)["RandomPassword"])
    binary = sm.create_secret(Name=f"{name}-bin", SecretBinary=s.marker("create-binary").encode())
    sm.get_secret_value(SecretId=binary["ARN"])
    refused(sm.create_secret, Name=name, SecretString=s.marker("duplicate"))
    refused(sm.put_secret_value, SecretId=f"{name}-missing", SecretString=s.marker("missing"))
    refused(sm.put_secret_value, SecretId=name, SecretString="x" * 70000 + s.marker("too-long"))


def sweep_ssm(server: KhoaServer, s: Secrets) -> None:
    ssm = server.client("ssm")
    path = f"/leak/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{path}/db", Value=s.marker("secure"), Type="SecureString")
    ssm.put_parameter(Name=f"{path}/db", Value=s.marker("secure-2"), Type="SecureString", Overwrite=True)
    ssm.get_parameter(Name=f"{path}/db", WithDecryption=True)
    ssm.get_parameters(Names=[f"{path}/db"], WithDecryption=True)
    ssm.get_parameters_by_path(Path=path, WithDecryption=True)
    ssm.get_parameter_history(Name=f"{path}/db", WithDecryption=True)
    refused(
        ssm.put_parameter,
        Name=f"{path}/pattern",
        Value=s.marker("pattern"),
        Type="SecureString",
        AllowedPattern="^[0-9]+$",
    )
    refused(ssm.put_parameter, Name=f"{path}/db", Value=s.marker("no-overwrite"), Type="SecureString")
    refused(
        ssm.put_parameter,
        Name=f"{path}/badkey",
        Value=s.marker("bad-key"),
        Type="SecureString",
        KeyId="alias/does-not-exist",
    )


def sweep_sts(server: KhoaServer, s: Secrets) -> None:
    role = seed_role(server, f"leak-{uuid.uuid4().hex[:6]}")
    # Roles may not be assumed by the root user: assume it as a user allowed to.
    assumer = new_user(
        server, server.client("iam"), {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
    )
    sts = assumer.client("sts")
    credentials = sts.assume_role(RoleArn=role, RoleSessionName="leak")["Credentials"]
    s.returned(credentials["SecretAccessKey"])
    s.returned(credentials["SessionToken"])
    session = server.client(
        "sts",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    session.get_caller_identity()


def sweep_iam(server: KhoaServer, s: Secrets) -> bool:
    """IAM access keys and login passwords, where Khoa serves IAM; returns whether it does."""
    iam = server.client("iam")
    user = f"leak-{uuid.uuid4().hex[:6]}"
    try:
        iam.create_user(UserName=user)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("UnknownOperationException", "InvalidAction"):
            return False
        raise
    key = iam.create_access_key(UserName=user)["AccessKey"]
    s.returned(key["SecretAccessKey"])
    try:
        iam.create_login_profile(UserName=user, Password=s.marker("Password") + "aA1!")
        iam.update_login_profile(UserName=user, Password=s.marker("Password2") + "aA1!")
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("UnknownOperationException", "InvalidAction"):
            raise
    user_client = server.client(
        "sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    user_client.get_caller_identity()
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """A server of the module's own (its whole data directory is searched); each test looks only for
    the secrets it handled itself, under unique names."""
    instance = KhoaServer(tmp_path_factory.mktemp("leaks") / "data").start()
    yield instance
    instance.stop()


def test_no_secret_reaches_the_audit_trail(server: KhoaServer) -> None:
    s = Secrets()
    sweep_kms(server, s)
    sweep_secretsmanager(server, s)
    sweep_ssm(server, s)
    sweep_sts(server, s)
    sweep_iam(server, s)
    assert len(s.values) > 30

    records = [e["CloudTrailEvent"] for e in all_events(server.client("cloudtrail"))]
    names = {json.loads(r)["eventName"] for r in records}
    assert {
        "Encrypt",
        "Decrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "DeriveSharedSecret",
        "ImportKeyMaterial",
        "CreateSecret",
        "PutSecretValue",
        "GetSecretValue",
        "BatchGetSecretValue",
        "GetRandomPassword",
        "PutParameter",
        "GetParameter",
        "GetParametersByPath",
        "AssumeRole",
        "GetCallerIdentity",
    } <= names
    trail = "\n".join(records).encode()
    for form in s.forms():
        assert form not in trail, f"{form[:40]!r} is in an audit record"

    # Every byte the server keeps under its data directory: the database, its journal, trail files.
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("khoa.db") for p in files)
    for path in files:
        data = path.read_bytes()
        for form in s.forms():
            assert form not in data, f"{form[:40]!r} is in {path.name}"

    # The trail says a secret was given, as CloudTrail does, without it.
    created = [json.loads(r) for r in records if json.loads(r)["eventName"] == "CreateSecret"]
    assert any(r["requestParameters"].get("secretString") == HIDDEN for r in created)
    put = [json.loads(r) for r in records if json.loads(r)["eventName"] == "PutParameter"]
    assert all(r["requestParameters"].get("value") == HIDDEN for r in put if r["requestParameters"])


def test_audit_tail_shows_no_secret(server: KhoaServer) -> None:
    s = Secrets()
    sweep_secretsmanager(server, s)
    sweep_ssm(server, s)
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "audit", "tail", "-n", "1000", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env(),
    )
    assert done.returncode == 0, done.stderr
    assert "secretsmanager:CreateSecret" in done.stdout
    for form in s.forms():
        assert form.decode("latin-1") not in done.stdout
