"""Parameter policies: validation, the expiration time, and how they are described."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from khoa.protocol.errors import AWSError
from khoa.services.ssm import policies

EXPIRATION = {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": "2030-12-02T21:34:33.000Z"}}
NOTICE = {"Type": "ExpirationNotification", "Version": "1.0", "Attributes": {"Before": "15", "Unit": "Days"}}
NO_CHANGE = {"Type": "NoChangeNotification", "Version": "1.0", "Attributes": {"After": "20", "Unit": "Hours"}}


def refusal_code(document: object) -> str | None:
    try:
        policies.parse(document if isinstance(document, str) else json.dumps(document))
    except AWSError as error:
        return error.code
    return None


def test_valid_documents() -> None:
    assert policies.parse(json.dumps([EXPIRATION, NOTICE, NO_CHANGE])) == [EXPIRATION, NOTICE, NO_CHANGE]
    assert policies.parse("[]") == []


@pytest.mark.parametrize(
    "stamp",
    [
        "2030-12-02T21:34:33.000Z",
        "2030-12-02T21:34:33Z",
        "2019-11-01T22:13:48.87+10:30",
        "2030-01-01T00:00:00+00:00",
    ],
)
def test_expiration_formats(stamp: str) -> None:
    policy = {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": stamp}}
    assert refusal_code([policy]) is None


def test_expiration_time() -> None:
    assert (
        policies.expires_at([NOTICE, EXPIRATION]) == datetime(2030, 12, 2, 21, 34, 33, tzinfo=UTC).timestamp()
    )
    assert policies.expires_at([NOTICE]) is None


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{not json", "InvalidPolicyTypeException"),
        ('"a string"', "InvalidPolicyTypeException"),
        ([{"Type": "Delete", "Attributes": {}}], "InvalidPolicyTypeException"),
        (["not an object"], "InvalidPolicyTypeException"),
        ([{"Type": "Expiration"}], "InvalidPolicyAttributeException"),
        (
            [{"Type": "Expiration", "Attributes": {"Timestamp": "tomorrow"}}],
            "InvalidPolicyAttributeException",
        ),
        (
            [{"Type": "Expiration", "Attributes": {"Timestamp": "2030-01-01T00:00:00"}}],
            "InvalidPolicyAttributeException",
        ),
        (
            [{"Type": "ExpirationNotification", "Attributes": {"Before": "0", "Unit": "Days"}}],
            "InvalidPolicyAttributeException",
        ),
        (
            [{"Type": "ExpirationNotification", "Attributes": {"Before": "-1", "Unit": "Days"}}],
            "InvalidPolicyAttributeException",
        ),
        (
            [{"Type": "ExpirationNotification", "Attributes": {"Before": "5"}}],
            "InvalidPolicyAttributeException",
        ),
        (
            [{"Type": "NoChangeNotification", "Attributes": {"After": "5", "Unit": "Minutes"}}],
            "InvalidPolicyAttributeException",
        ),
        ([EXPIRATION, EXPIRATION], "IncompatiblePolicyException"),
        ([NO_CHANGE] * 11, "PoliciesLimitExceededException"),
    ],
)
def test_invalid_documents(document: object, code: str) -> None:
    assert refusal_code(document) == code


def test_describe() -> None:
    text = json.dumps([EXPIRATION, NO_CHANGE])
    before = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    after = datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    described = policies.describe(text, before)
    assert [(p["PolicyType"], p["PolicyStatus"]) for p in described] == [
        ("Expiration", "Pending"),
        ("NoChangeNotification", "Pending"),
    ]
    assert json.loads(described[0]["PolicyText"]) == EXPIRATION
    assert " " not in described[0]["PolicyText"]
    assert policies.describe(text, after)[0]["PolicyStatus"] == "Finished"
    assert policies.describe(None, after) == []
