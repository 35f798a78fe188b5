"""Leak fingerprints (khoa.crypto.fingerprint), the leak check's token buckets, and that neither
validation errors nor audit records of khoa-leaks calls carry a candidate value."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from khoa.audit.events import build
from khoa.auth.principal import Principal
from khoa.crypto.fingerprint import Fingerprinter, json_leaves, new_key
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.leaks.limits import RateLimiter
from khoa.services.leaks.store import LeakStore
from khoa.storage.database import create_database_engine, migrate

KEY = bytes(range(32))


def test_a_fingerprint_is_hmac_sha256_under_the_key() -> None:
    fingerprinter = Fingerprinter(KEY)
    expected = hmac.new(KEY, "hunter2-ünïcode".encode(), hashlib.sha256).hexdigest()
    assert fingerprinter.digest("hunter2-ünïcode") == expected
    assert fingerprinter.digest(b"\x00\xff") == hmac.new(KEY, b"\x00\xff", hashlib.sha256).hexdigest()
    # another installation's key gives other fingerprints: a copied table tests nothing offline
    assert Fingerprinter(new_key()).digest("hunter2-ünïcode") != expected


def test_the_key_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="256 bits"):
        Fingerprinter(b"short")


def test_json_leaves_are_every_string_leaf_but_where_a_database_is() -> None:
    document = {
        "engine": "postgres",
        "host": "db.internal",
        "port": 5432,
        "username": "app",
        "password": "pw-1",
        "nested": {"api_key": "k-2", "flags": [True, "t-3", {"token": "t-4"}]},
        "empty": "",
    }
    assert sorted(json_leaves(json.dumps(document))) == [
        ("nested.api_key", "k-2"),
        ("nested.flags[1]", "t-3"),
        ("nested.flags[2].token", "t-4"),
        ("password", "pw-1"),
    ]
    assert list(json_leaves("not json {")) == []
    assert list(json_leaves('"a JSON string is not a document"')) == []
    assert list(json_leaves("[" * 100_000)) == []  # too deep: not a document, not an error


def test_a_secret_string_is_fingerprinted_whole_and_by_leaf() -> None:
    fingerprinter = Fingerprinter(KEY)
    value = json.dumps({"password": "pw-1", "again": "pw-1"})
    items = fingerprinter.secret_string_items(value)
    assert items[0] == (None, fingerprinter.digest(value))
    assert items[1] == ("password", fingerprinter.digest("pw-1"))
    assert len(items) == 2  # one row per distinct fingerprint


def test_a_secret_binary_is_fingerprinted_raw_and_as_base64() -> None:
    fingerprinter = Fingerprinter(KEY)
    raw = os.urandom(24)
    assert fingerprinter.secret_binary_items(raw) == [
        (None, fingerprinter.digest(raw)),
        (None, fingerprinter.digest(base64.b64encode(raw))),
    ]


def test_token_buckets_are_per_principal_and_refill(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    try:
        migrate(engine)
        now = [1000.0]
        limiter = RateLimiter(LeakStore(engine), capacity=3, period_seconds=3.0, clock=lambda: now[0])
        for _ in range(3):
            limiter.take("arn:aws:iam::111122223333:user/a")
        with pytest.raises(AWSError) as refused:
            limiter.take("arn:aws:iam::111122223333:user/a")
        assert (refused.value.code, refused.value.status) == ("ThrottlingException", 400)
        limiter.take("arn:aws:iam::111122223333:user/b")  # a bucket of its own
        now[0] += 1.0  # one token back
        limiter.take("arn:aws:iam::111122223333:user/a")
        with pytest.raises(AWSError):
            limiter.take("arn:aws:iam::111122223333:user/a")
        now[0] += 100.0  # full again, but never more than full
        for _ in range(3):
            limiter.take("arn:aws:iam::111122223333:user/a")
        with pytest.raises(AWSError):
            limiter.take("arn:aws:iam::111122223333:user/a")
    finally:
        engine.dispose()


def test_a_validation_error_never_echoes_candidates() -> None:
    model = ServiceModel("khoa-leaks")
    too_many = [{"Id": str(i), "Value": f"candidate-value-{i}"} for i in range(101)]
    with pytest.raises(AWSError) as caught:
        model.validate("CheckLeakedValues", {"Candidates": too_many})
    assert caught.value.code == "ValidationException"
    assert "candidate-value" not in (caught.value.message or "")
    with pytest.raises(AWSError) as caught:
        model.validate("CheckLeakedValues", {"Candidates": [{"Id": "1", "Value": "v" * 65537}]})
    assert "vvvv" not in (caught.value.message or "")


def test_the_audit_record_leaves_candidate_values_out() -> None:
    params = {"Candidates": [{"Id": "a", "Value": "candidate-secret"}], "SourceUrl": "https://x.example/"}
    event = build(
        model=ServiceModel("khoa-leaks"),
        service="khoa-leaks",
        operation="ReportLeakedValues",
        region="us-east-1",
        request_id="r",
        principal=Principal.account_root("111122223333"),
        access_key_id="AKIAEXAMPLE",
        source_ip="127.0.0.1",
        user_agent="test",
        params=params,
        result={"Matches": [], "Responses": []},
        error_code=None,
        error_message=None,
        now=datetime.now(UTC),
        recipient_account="111122223333",
    )
    assert event.record["requestParameters"] == {
        "candidates": [{"id": "a"}],
        "sourceUrl": "https://x.example/",
    }
    assert "candidate-secret" not in json.dumps(event.record)
