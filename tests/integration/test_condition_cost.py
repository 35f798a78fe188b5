"""Large conditions against large requests, on the wire (red-team DoS finding 3): a key policy or an
identity policy with thousands of condition values on ``kms:EncryptionContextKeys``, against Encrypt,
Decrypt and GenerateDataKey calls with thousands of encryption-context pairs (a body just under the
size that moves a call off the event loop).

The evaluator prepares the condition's values once (sets, alternations grouped by first character)
and moves an authorisation whose conditions still cost too much off the event loop: these tests check
that the answers are right either way, a call no value matches allowed and one a value matches
denied. Nothing here measures time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.iam import allow, deny, document
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

FENCED = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
PAIRS = 7000  # {"k6999": ""} and the rest: about 90 KiB of JSON, under the 96 KiB threshold


def _denied(call: Any, /, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException", caught.value.response


def _context(*extra: str) -> dict[str, str]:
    context = {f"k{i}": "" for i in range(PAIRS)}
    context.update(dict.fromkeys(extra, "v"))
    return context


def _fenced_key(kms: Any, operator: str, values: list[str]) -> str:
    """A key whose policy lets the account do anything but FENCED where ``operator`` holds."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "root",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "fence",
                "Effect": "Deny",
                "Principal": "*",
                "Action": FENCED,
                "Resource": "*",
                "Condition": {operator: {"kms:EncryptionContextKeys": values}},
            },
        ],
    }
    text = json.dumps(policy, separators=(",", ":"))
    assert len(text) <= 32 * 1024  # within AWS's key policy quota
    return str(kms.create_key(Policy=text)["KeyMetadata"]["KeyId"])


def _answers_both_ways(kms: Any, key: str, matching: str) -> None:
    """No pair matches: Encrypt, Decrypt and GenerateDataKey succeed. One more pair that matches:
    each is denied."""
    context = _context()
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext=context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"secret"
    assert (
        len(kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=context)["Plaintext"]) == 32
    )
    fenced = _context(matching)
    _denied(kms.encrypt, KeyId=key, Plaintext=b"secret", EncryptionContext=fenced)
    _denied(kms.decrypt, CiphertextBlob=blob, EncryptionContext=fenced)
    _denied(kms.generate_data_key, KeyId=key, KeySpec="AES_256", EncryptionContext=fenced)


def test_the_findings_shape_is_answered_both_ways(kms: Any) -> None:
    """2500 StringLike patterns none of the request's keys can start like: prepared once, each key
    looked up once."""
    key = _fenced_key(kms, "ForAnyValue:StringLike", [f"q{i}*z?" for i in range(2500)])
    _answers_both_ways(kms, key, "q1234-xz9")


def test_patterns_every_key_must_be_tried_against_are_answered_both_ways(kms: Any) -> None:
    """2500 patterns that start with a wildcard: every key against every pattern, which the server
    moves off its event loop; the answers are the same."""
    key = _fenced_key(kms, "ForAnyValue:StringLike", [f"*q{i}*" for i in range(2500)])
    _answers_both_ways(kms, key, "xq2499x")


def test_string_equals_over_thousands_of_values_is_answered_both_ways(kms: Any) -> None:
    key = _fenced_key(kms, "ForAnyValue:StringEquals", [f"q{i}" for i in range(3000)])
    _answers_both_ways(kms, key, "q2999")


def test_for_all_values_over_thousands_of_values(kms: Any) -> None:
    """ForAllValues: denied while every key matches some pattern, allowed once one matches none."""
    patterns = ["k?", "k??", "k???", "k????"] + [f"q{i}*" for i in range(2500)]
    key = _fenced_key(kms, "ForAllValues:StringLike", patterns)
    _denied(kms.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=_context())
    _denied(kms.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=_context("q77x"))
    kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=_context("other"))


def test_identity_policy_conditions_are_answered_both_ways(server: KhoaServer, iam: Any) -> None:
    """The same from an IAM managed policy (6144 characters) under the default key policy."""
    patterns = [f"*q{i}*" for i in range(560)]
    fence = document(
        deny(FENCED, Condition={"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": patterns}})
    )
    assert len(fence) <= 6144
    arn = iam.create_policy(PolicyName=unique("fence"), PolicyDocument=fence)["Policy"]["Arn"]
    user = new_user(server, iam, allow("kms:*"))
    iam.attach_user_policy(UserName=user.name, PolicyArn=arn)
    kms = user.client("kms")
    key = str(kms.create_key()["KeyMetadata"]["KeyId"])
    _answers_both_ways(kms, key, "xq559x")
