"""What khoa-leaks takes as evidence of a leak (khoa.crypto.fingerprint.plausibly_secret: which JSON
leaves of a secret are fingerprinted and matched), and whose rate-limit bucket a call takes from."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import pytest

from khoa.auth.principal import Principal
from khoa.crypto.fingerprint import Fingerprinter, plausibly_secret
from khoa.protocol.context import RequestContext
from khoa.services.leaks.authtable import rate_key

KEY = bytes(range(32))
# Random-looking (digits, both cases, > 16 characters), and fixed: parameters must be the same in every
# pytest-xdist worker that collects them.
RANDOM = "XkRV8weaUiUslv0XwIou3ifghv9HRQTpfoNTqMqOfO7"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        # common values: booleans, null and numbers as text, short words, Regions, ids, names
        ("tls", "true"),
        ("enabled", "False"),
        ("mode", "null"),
        ("retries", "5"),
        ("ratio", "1.5e3"),
        ("region", "us-east-1"),
        ("aws_region", "eu-west-1"),
        ("env", "production"),
        ("content_type", "application/json"),
        ("endpoint", "https://api.example.com/v1"),
        ("created", "2024-01-01T00:00:00Z"),
        ("description", "Database for the Payroll team, rotated 2024"),
        ("role", "arn:aws:iam::111122223333:role/AppRole2024"),
        ("path", "/var/lib/postgresql/data"),
        ("repeated", "ab1ab1ab1ab1ab1ab1ab1"),
        # connection fields and anything named as an id, a name or public material, however random
        ("host", RANDOM),
        ("replica_hosts[1]", RANDOM),
        ("db.username", RANDOM),
        ("client_id", RANDOM),
        ("aws_access_key_id", RANDOM),
        ("secretName", RANDOM),
        ("tenantIds[0]", RANDOM),
        ("public_key", RANDOM),
        ("ca_certificate", RANDOM),
        # an access key id, even under a field named like a credential
        ("access_key", "AKIAIOSFODNN7EXAMPLE"),
        ("keys[0]", "ASIAXXXXXXXXXXXXXXXX"),
        # a credential's field with a value that proves nothing
        ("password", "yes"),
        ("token", "abc"),
        ("api_key", "1234"),
    ],
)
def test_what_proves_nothing_is_not_a_leak(path: str, text: str) -> None:
    assert not plausibly_secret(path, text)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        # a credential's field: its value, however weak, is the credential
        ("password", "pw-1"),
        ("db.password", "hunter2"),
        ("DB_PASSWORD", "admin123"),
        ("passwd", "letmein"),
        ("api_key", "k-2x"),
        ("apiKey", "sk_live_abc"),
        ("clientSecret", "s3cr"),
        ("nested.flags[2].token", "t-4t"),
        ("secret_access_key", RANDOM),
        ("private_key", "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----"),
        ("passwords[1]", "second-password"),
        ("credentials", "user:pass-123"),
        # any other field: only what looks random
        ("values[0]", RANDOM),
        ("connection", "postgres://app:S3cr3t-Pw-8812@db.internal:5432/app"),
        ("webhook", "https://hooks.example.com/services/T0A1B2C3/B4D5E6F7/Zq9Xw8Vu7Ts6Rr5Q"),
        ("value", "8FC1A0B83F8EE071D9D6CF64C7136A13"),
        ("", RANDOM),
    ],
)
def test_what_proves_a_leak_is_one(path: str, text: str) -> None:
    assert plausibly_secret(path, text)


def test_only_plausibly_secret_leaves_are_fingerprinted() -> None:
    """The red team's secret: its whole value and its password, not its Region, flags or numbers."""
    fingerprinter = Fingerprinter(KEY)
    password = "S3cr3t-" + secrets.token_urlsafe(12)
    document = json.dumps(
        {
            "password": password,
            "region": "us-east-1",
            "tls": "true",
            "port": 5432,
            "enabled": True,
            "proxy": None,
            "retries": "3",
            "client_id": RANDOM,
        }
    )
    assert fingerprinter.secret_string_items(document) == [
        (None, fingerprinter.digest(document)),
        ("password", fingerprinter.digest(password)),
    ]
    # a whole value is always fingerprinted: its owner stored it as a secret
    assert fingerprinter.secret_string_items("us-east-1") == [(None, fingerprinter.digest("us-east-1"))]


def _ctx(principal: Principal) -> RequestContext:
    return RequestContext(
        principal=principal,
        region="us-east-1",
        request_id="r",
        service="khoa-leaks",
        operation="CheckLeakedValues",
        now=datetime.now(UTC),
    )


def _session(name: str) -> Principal:
    return Principal(
        account_id="111122223333",
        arn=f"arn:aws:sts::111122223333:assumed-role/scanner/{name}",
        user_id=f"AROAEXAMPLE:{name}",
        kind="AssumedRole",
        name="scanner",
        principal_id="AROAEXAMPLE",
        session_name=name,
    )


def test_the_rate_limit_is_the_identitys_not_the_sessions() -> None:
    assert rate_key(_ctx(_session("one"))) == rate_key(_ctx(_session("two")))
    assert rate_key(_ctx(_session("one"))) == "arn:aws:iam::111122223333:role/scanner"
    user = Principal("111122223333", "arn:aws:iam::111122223333:user/ci", "AIDA1", "IAMUser", name="ci")
    assert rate_key(_ctx(user)) == user.arn
    root = Principal.account_root("111122223333")
    assert rate_key(_ctx(root)) == "arn:aws:iam::111122223333:root"
    assert len({rate_key(_ctx(p)) for p in (_session("x"), user, root)}) == 3
