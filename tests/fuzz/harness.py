"""Sending fuzz cases to a real server and judging the answers.

One keep-alive HTTP connection, every request SigV4-signed by botocore (a ``--dev`` server takes any
signature; the credential scope still routes query requests to IAM or STS), a client timeout on every
request, and a read-only view of the server's SQLite database for the "nothing stored" check.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fuzz.generate import Case, Pool
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 1024 * 1024  # the server's default KHOA_MAX_BODY_BYTES
CLOSED_EARLY = 413  # recorded for an oversized request the server cut off before the client read 413
CLOSED_EARLY_TYPE = "(connection closed while sending an oversized body)"
_TRACEBACK = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
_SIGNING_NAMES = {
    "kms": "kms",
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "sts": "sts",
    "iam": "iam",
    "cloudtrail": "cloudtrail",
    "organizations": "organizations",
    "accessanalyzer": "access-analyzer",
}
UNKNOWN_OPERATION = {
    "json": "UnknownOperationException",
    "query": "InvalidAction",
    "rest-json": "UnknownOperationException",
}


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float


class Hang(Exception):
    """No answer within the client timeout (or the connection died)."""


class Wire:
    """A keep-alive connection that signs and sends cases."""

    def __init__(self, server: KhoaServer, access_key: str, secret_key: str) -> None:
        self.port = server.port
        self.credentials = Credentials(access_key, secret_key)
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_SECONDS)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def signed_headers(self, case: Case) -> dict[str, str]:
        """The case's headers, signed, then broken as ``case.auth`` says."""
        if case.auth == "none":
            return dict(case.headers)
        url = f"http://127.0.0.1:{self.port}{case.path}"
        headers = dict(case.headers)
        if case.auth == "bad-token":
            headers["X-Amz-Security-Token"] = "FQoGZXIvYXdzE" + "A" * 300
        request = AWSRequest(method=case.method, url=url, data=case.body, headers=headers)
        signing_name = _SIGNING_NAMES[case.service]
        if case.auth == "wrong-service":
            signing_name = "s3"
        SigV4Auth(self.credentials, signing_name, case.region).add_auth(request)
        signed = {k: v for k, v in request.headers.items()}
        if case.auth == "garbage":
            signed["Authorization"] = "AWS4-HMAC-SHA256 Credential=,,,==, SignedHeaders=;;, Signature=\u00ff"
        elif case.auth == "bad-signature":
            last = signed["Authorization"][-1]
            signed["Authorization"] = signed["Authorization"][:-1] + ("1" if last == "0" else "0")
        elif case.auth == "huge":
            signed["Authorization"] = "AWS4-HMAC-SHA256 Credential=" + "A/" * 4000 + ", Signature=00"
        elif case.auth == "bad-date":
            signed["X-Amz-Date"] = "20261306T256161Z"
        elif case.auth == "old-date":
            signed["X-Amz-Date"] = "20200101T000000Z"  # outside the allowed skew (and so not signed)
        return signed

    def send(self, case: Case) -> Answer:
        headers = self.signed_headers(case)
        started = time.monotonic()
        for attempt in range(2):
            connection = self._connect()
            try:
                connection.putrequest(case.method, case.path, skip_accept_encoding=True)
                for name, value in headers.items():
                    connection.putheader(name, value.encode("latin-1") if isinstance(value, str) else value)
                connection.putheader("Content-Length", str(len(case.body)))
                connection.endheaders(case.body)
                response = connection.getresponse()
                body = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return Answer(
                    response.status, response.getheader("content-type", ""), body, time.monotonic() - started
                )
            except TimeoutError as error:
                self.close()
                raise Hang(f"no answer in {TIMEOUT_SECONDS:.0f} s") from error
            except (http.client.HTTPException, ConnectionError) as error:
                self.close()
                if len(case.body) > MAX_BODY_BYTES and isinstance(error, ConnectionError):
                    # The server answers an oversized body 413 as soon as it passes the limit and
                    # closes; the client, still sending, may see the reset before the answer (HTTP
                    # allows this). That is a refusal, not a hang.
                    return Answer(CLOSED_EARLY, CLOSED_EARLY_TYPE, b"", time.monotonic() - started)
                # The server may close an idle keep-alive connection; retry once on a new
                # connection before calling it a failure.
                if attempt == 1 or time.monotonic() - started > TIMEOUT_SECONDS:
                    raise Hang(f"connection failed: {error!r}") from error
        raise AssertionError("unreachable")


def error_code(case: Case, answer: Answer) -> str | None:
    """The AWS error code in ``answer``, or None when the body is not an AWS-shaped error."""
    if "xml" in answer.content_type:
        try:
            root = ET.fromstring(answer.body)
        except ET.ParseError:
            return None
        if not root.tag.endswith("ErrorResponse"):
            return None
        code = root.find("./{*}Error/{*}Code")
        message = root.find("./{*}Error/{*}Message")
        if code is None or not code.text or message is None:
            return None
        return code.text
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("__type"), str):
        return None
    if "message" in parsed and not isinstance(parsed["message"], str):
        return None
    if "Message" in parsed and not isinstance(parsed["Message"], str):
        return None
    return str(parsed["__type"])


_HTTP_LAYER_REFUSAL = b"Invalid HTTP request received."
_NOT_HEADER_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def judge(case: Case, answer: Answer) -> list[str]:
    """What is wrong with ``answer`` (nothing, for a good one)."""
    problems: list[str] = []
    if answer.content_type == CLOSED_EARLY_TYPE:
        return problems
    if (
        answer.status == 400
        and answer.body == _HTTP_LAYER_REFUSAL
        and any(_NOT_HEADER_TEXT.search(v) for v in case.headers.values())
    ):
        # A header with control characters is not HTTP (RFC 9110 field-value): the HTTP parser
        # refuses it before any AWS code runs, as AWS's front end does. Nothing else may do this.
        return problems
    if answer.status >= 500:
        problems.append(f"HTTP {answer.status}")
    if _TRACEBACK.search(answer.body):
        problems.append("Python traceback in the body")
    if answer.status >= 400:
        code = error_code(case, answer)
        expected = "xml" if case.protocol == "query" and case.headers.get("X-Amz-Target") is None else "json"
        if code is None:
            problems.append(f"HTTP {answer.status} body is not an AWS error: {answer.body[:200]!r}")
        elif expected not in answer.content_type:
            problems.append(f"{case.protocol} service answered an error as {answer.content_type!r}")
        elif (
            not case.implemented
            and case.kind not in ("protocol", "auth")
            and code != UNKNOWN_OPERATION[case.protocol]
            and answer.status != 413
        ):
            problems.append(
                f"unimplemented operation answered {code}, not {UNKNOWN_OPERATION[case.protocol]}"
            )
    elif answer.status >= 200:
        if case.auth != "sign":
            problems.append(f"request with broken authentication ({case.auth}) was answered {answer.status}")
        if case.garbage_token:
            problems.append(f"a garbage page token was accepted ({case.detail})")
        if not case.implemented and case.kind != "protocol":
            problems.append(f"unimplemented operation answered HTTP {answer.status}")
        try:
            if case.protocol == "query":
                ET.fromstring(answer.body)
            else:
                json.loads(answer.body)
        except (ValueError, ET.ParseError):
            problems.append(f"HTTP {answer.status} body does not parse: {answer.body[:200]!r}")
    return problems


# Tables holding resources a request can create, change or delete. Audit, alert and lease tables
# change on every request (or on a timer) by design and are left out.
_RESOURCE_PREFIXES = (
    "accounts",
    "access_keys",
    "kms_",
    "sm_",
    "ssm_",
    "iam_",
    "sts_",
    "rotation_",
    "webhooks",
    "org_",
    "aa_",
)
_CHANGE_TABLES = ("change_events",)
# The tables each service's operations write (row counts of all tables are compared regardless).
_SERVICE_TABLES = {
    "kms": ("kms_",),
    "secretsmanager": ("sm_", "rotation_", "change_events"),
    "ssm": ("ssm_",),
    "iam": ("iam_", "access_keys", "accounts"),
    "sts": ("sts_", "iam_", "access_keys"),
    "organizations": ("org_",),
    "accessanalyzer": ("aa_",),
}
# Columns a read may update; a refused request must not touch anything else.
_VOLATILE = {("sm_secrets", "last_accessed_at"), ("sm_versions", "last_accessed_at")}


class StateProbe:
    """A read-only view of a server's database (SQLite file, or a PostgreSQL URL): row counts of every
    resource table (cheap, for every refused request) and a digest of every resource row (a sample)."""

    def __init__(self, database: Path | str) -> None:
        self.postgres = isinstance(database, str)
        self.db: Any
        if isinstance(database, str):
            import psycopg

            self.db = psycopg.connect(
                database.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
            )
            self.db.execute("SET default_transaction_read_only = on")
            names = [
                r[0]
                for r in self.db.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                    " ORDER BY table_name"
                ).fetchall()
            ]
        else:
            self.db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10, isolation_level=None)
            names = [
                r[0]
                for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            ]
        self.tables = [n for n in names if n.startswith(_RESOURCE_PREFIXES) or n in _CHANGE_TABLES]
        self._count_sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables)
        self._columns = {
            t: [c for c in self._table_columns(t) if (t, c) not in _VOLATILE] for t in self.tables
        }

    def _table_columns(self, table: str) -> list[str]:
        if self.postgres:
            rows = self.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            return [r[0] for r in rows]
        return [r[1] for r in self.db.execute(f'PRAGMA table_info("{table}")')]

    def counts(self) -> tuple[int, ...]:
        row = self.db.execute(self._count_sql).fetchone()
        return tuple(row)

    def digest(self, service: str | None = None) -> dict[str, str]:
        """A hash per table of every row of the tables ``service`` keeps its resources in (all
        resource tables for None), in a fixed order, read in one transaction."""
        prefixes = _SERVICE_TABLES.get(service or "", ("",))
        hashes: dict[str, str] = {}
        self.db.execute("BEGIN")
        try:
            for table in self.tables:
                if not table.startswith(prefixes):
                    continue
                names = self._columns[table]
                columns = ", ".join(f'"{c}"' for c in names)
                order = ", ".join(str(i + 1) for i in range(len(names))) if self.postgres else "rowid"
                rows = self.db.execute(f'SELECT {columns} FROM "{table}" ORDER BY {order}').fetchall()
                if self.postgres:  # psycopg reads bytea as memoryview, whose repr is its address
                    rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
                hashes[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        finally:
            self.db.execute("COMMIT")
        return hashes

    def describe_counts(self, before: tuple[int, ...], after: tuple[int, ...]) -> str:
        return ", ".join(
            f"{t}: {a} -> {b}" for t, a, b in zip(self.tables, before, after, strict=True) if a != b
        )

    def close(self) -> None:
        self.db.close()


@dataclass
class Outcome:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    failed_cases: list[tuple[Case, str]] = field(default_factory=list)
    checked_counts: int = 0
    checked_digests: int = 0
    slowest: float = 0.0


def run(
    cases: list[Case],
    wire: Wire,
    probe: StateProbe,
    digest_every: int,
    deadline: float,
    allowed: Callable[[Case], bool] | None = None,
) -> Outcome:
    """Send every case; judge each answer; for every refused request compare resource-table row counts
    before and after, and for every ``digest_every``-th refused mutating request the full digest.
    With ``allowed``, a 2xx answer to a case it says the caller may not make is an escalation."""
    outcome = Outcome()
    refused_mutating = 0
    counts = probe.counts()
    for case in cases:
        if time.monotonic() > deadline:
            outcome.failures.append(f"time budget exhausted after {outcome.sent} of {len(cases)} cases")
            break
        take_digest = case.mutating and refused_mutating % digest_every == 0
        before_digest = probe.digest(case.service) if take_digest else None
        try:
            answer = wire.send(case)
        except Hang as hang:
            _fail(outcome, case, f"hang: {hang}")
            outcome.sent += 1
            counts = probe.counts()
            continue
        outcome.sent += 1
        outcome.statuses[answer.status] = outcome.statuses.get(answer.status, 0) + 1
        outcome.slowest = max(outcome.slowest, answer.seconds)
        for problem in judge(case, answer):
            _fail(outcome, case, f"{problem}; answer: {answer.body[:300]!r}")
        if allowed is not None and 200 <= answer.status < 300 and not allowed(case):
            _fail(outcome, case, f"not permitted, yet answered {answer.status}: {answer.body[:300]!r}")
        after = probe.counts()
        if answer.status >= 400:
            outcome.checked_counts += 1
            if after != counts:
                _fail(
                    outcome,
                    case,
                    f"refused (HTTP {answer.status}) but stored: {probe.describe_counts(counts, after)}",
                )
            if case.mutating:
                if before_digest is not None:
                    outcome.checked_digests += 1
                    after_digest = probe.digest(case.service)
                    if after_digest != before_digest:
                        changed = sorted(t for t in after_digest if after_digest[t] != before_digest.get(t))
                        _fail(
                            outcome,
                            case,
                            f"refused (HTTP {answer.status}) but changed stored rows in {changed}; answer:"
                            f" {answer.body[:200]!r}",
                        )
                refused_mutating += 1
        counts = after
    return outcome


def _fail(outcome: Outcome, case: Case, problem: str) -> None:
    outcome.failures.append(f"{problem}\n  {case.describe()}")
    outcome.failed_cases.append((case, problem))


# -- resources the valid requests can name ------------------------------------------------------------
def policy_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def populate(server: KhoaServer, access_key: str, secret_key: str) -> Pool:
    """Create a few resources of every kind and return a pool naming them (and real paging markers)."""
    pool = Pool()
    creds = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
    kms = server.client("kms", **creds)
    root_arn = f"arn:aws:iam::{ACCOUNT_ID}:root"
    key_policy = policy_document(
        {"Effect": "Allow", "Principal": {"AWS": root_arn}, "Action": "kms:*", "Resource": "*"}
    )
    keys = [kms.create_key(Description=f"fuzz {i}")["KeyMetadata"] for i in range(4)]
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    kms.create_alias(AliasName="alias/fz-a", TargetKeyId=keys[0]["KeyId"])
    kms.create_alias(AliasName="alias/fz-b", TargetKeyId=keys[1]["KeyId"])
    grant = kms.create_grant(
        KeyId=keys[0]["KeyId"], GranteePrincipal=root_arn, Operations=["Encrypt", "Decrypt"]
    )
    blob = kms.encrypt(KeyId=keys[0]["KeyId"], Plaintext=b"fuzz")["CiphertextBlob"]
    for key in [*keys, rsa, hmac]:
        pool.add("kms", "KeyId", key["KeyId"], key["Arn"])
    for member in ("TargetKeyId", "DestinationKeyId", "SourceKeyId"):
        pool.add("kms", member, keys[1]["KeyId"], keys[2]["Arn"], "alias/fz-b")
    pool.add("kms", "KeyId", "alias/fz-a", f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:alias/fz-a")
    pool.add("kms", "AliasName", "alias/fz-a", "alias/fz-b")
    pool.fresh[("kms", "AliasName")] = "alias/fz-new-"
    pool.add("kms", "GrantId", grant["GrantId"])
    pool.add("kms", "GrantToken", grant["GrantToken"])
    pool.add("kms", "CiphertextBlob", blob)
    pool.add("kms", "SourceCiphertextBlob", blob)
    pool.add("kms", "Policy", key_policy)
    pool.add("kms", "PolicyName", "default")
    pool.add("kms", "GranteePrincipal", root_arn)
    pool.add("kms", "RetiringPrincipal", root_arn)
    pool.add("kms", "Marker", kms.list_keys(Limit=1)["NextMarker"])

    sm = server.client("secretsmanager", **creds)
    secrets = [sm.create_secret(Name=f"fz/secret-{i}", SecretString=f"value {i}") for i in range(3)]
    binary = sm.create_secret(Name="fz/binary", SecretBinary=b"\x00\x01")
    for secret in [*secrets, binary]:
        pool.add("secretsmanager", "SecretId", secret["Name"], secret["ARN"])
        pool.add("secretsmanager", "VersionId", secret["VersionId"])
    pool.add("secretsmanager", "Name", "fz/secret-0")
    pool.fresh[("secretsmanager", "Name")] = "fz/new-"
    pool.add("secretsmanager", "KmsKeyId", keys[3]["KeyId"], "alias/fz-a")
    pool.add(
        "secretsmanager",
        "ResourcePolicy",
        policy_document(
            {"Effect": "Allow", "Principal": {"AWS": root_arn}, "Action": "secretsmanager:*", "Resource": "*"}
        ),
    )
    pool.add("secretsmanager", "VersionStage", "AWSCURRENT", "AWSPREVIOUS", "fz-stage")
    pool.add("secretsmanager", "NextToken", sm.list_secrets(MaxResults=1)["NextToken"])

    ssm = server.client("ssm", **creds)
    names = ["/fz/a", "/fz/b/c", "fz-flat", "/fz/b/d"]
    for name in names:
        ssm.put_parameter(Name=name, Value="v", Type="String")
    ssm.put_parameter(Name="/fz/secure", Value="s", Type="SecureString")
    pool.add("ssm", "Name", *names, "/fz/secure")
    pool.fresh[("ssm", "Name")] = "/fz/new/p"
    pool.add("ssm", "Path", "/fz", "/fz/b", "/")
    pool.add("ssm", "ResourceId", *names)
    pool.add("ssm", "ResourceType", "Parameter")
    pool.add("ssm", "KeyId", "alias/aws/ssm", keys[3]["KeyId"])
    pool.add("ssm", "Label", "fz-label")
    pool.add("ssm", "NextToken", ssm.describe_parameters(MaxResults=1)["NextToken"])

    iam = server.client("iam", **creds)
    iam.create_user(UserName="fz-user")
    iam.create_group(GroupName="fz-group")
    trust = policy_document({"Effect": "Allow", "Principal": {"AWS": root_arn}, "Action": "sts:AssumeRole"})
    role = iam.create_role(RoleName="fz-role", AssumeRolePolicyDocument=trust)["Role"]
    managed = iam.create_policy(
        PolicyName="fz-policy",
        PolicyDocument=policy_document({"Effect": "Allow", "Action": "kms:List*", "Resource": "*"}),
    )["Policy"]
    key = iam.create_access_key(UserName="fz-user")["AccessKey"]
    pool.add("iam", "UserName", "fz-user")
    pool.fresh[("iam", "UserName")] = "fz-user-"
    pool.add("iam", "GroupName", "fz-group")
    pool.fresh[("iam", "GroupName")] = "fz-group-"
    pool.add("iam", "RoleName", "fz-role")
    pool.fresh[("iam", "RoleName")] = "fz-role-"
    pool.add("iam", "PolicyArn", managed["Arn"], "arn:aws:iam::aws:policy/ReadOnlyAccess")
    pool.add("iam", "PolicyName", "fz-inline", "fz-policy")
    pool.add("iam", "AccessKeyId", key["AccessKeyId"])
    identity_policy = policy_document(
        {"Effect": "Allow", "Action": ["kms:Describe*", "s3:Get*"], "Resource": "*"}
    )
    pool.add("iam", "PolicyDocument", identity_policy)
    pool.add("iam", "AssumeRolePolicyDocument", trust)
    pool.add("iam", "Path", "/", "/fz/")
    pool.add("iam", "PathPrefix", "/", "/fz/")
    pool.add("iam", "Marker", iam.list_policies(MaxItems=1)["Marker"])
    pool.add("sts", "RoleArn", role["Arn"])
    pool.add("sts", "RoleSessionName", "fz-session")
    pool.add("sts", "AccessKeyId", key["AccessKeyId"])
    pool.add("sts", "PolicyArns", managed["Arn"])
    pool.add("sts", "Policy", identity_policy)
    pool.add("cloudtrail", "AttributeKey", "EventName", "Username", "ResourceName")
    return pool


def healthy(server: KhoaServer, access_key: str, secret_key: str) -> None:
    """Assert the server answers its health check and a normal call."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_SECONDS):
        pass
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/_khoa/health")
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        connection.close()
    kms = server.client("kms", aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    key_id = kms.create_key(Description="after the fuzz run")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"still works")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still works"
    assert (
        server.client(
            "sts", aws_access_key_id=access_key, aws_secret_access_key=secret_key
        ).get_caller_identity()["Account"]
        == ACCOUNT_ID
    )
