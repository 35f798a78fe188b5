"""Property (issue 11): a malformed policy document is never stored, through the wire.

Generated mutations of valid documents (each breaking one grammar rule: wrong types, unknown
operators, bad principal types, numbers in lists, Resource with NotResource, deep nesting, duplicate
keys ...) are sent to a real server with PutResourcePolicy, PutKeyPolicy and IAM CreatePolicy. Each
must be refused with the service's MalformedPolicyDocument error, and what was stored before must be
unchanged. Few examples: each costs several requests.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from tests.support.errors import code_of
from tests.support.identity import ROOT_ARN
from tests.support.names import unique
from tests.support.policy_strategies import malformed
from tests.support.server import ACCOUNT_ID, KhoaServer

WIRE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

SECRET_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret", "Resource": "*"}
        ],
    }
)
KEY_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
        ],
    }
)


@WIRE
@given(text=malformed(resource_policy=True))
def test_malformed_resource_and_key_policies_are_never_stored(server: KhoaServer, text: str) -> None:
    sm = server.client("secretsmanager")
    kms = server.client("kms")
    secret = _secret(server)
    key = _key(server)
    assert code_of(sm.put_resource_policy, SecretId=secret, ResourcePolicy=text) == (
        "MalformedPolicyDocumentException"
    )
    assert sm.get_resource_policy(SecretId=secret)["ResourcePolicy"] == SECRET_POLICY
    assert code_of(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=text) == (
        "MalformedPolicyDocumentException"
    )
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == KEY_POLICY


@WIRE
@given(text=malformed(resource_policy=False))
def test_malformed_identity_policies_are_never_stored(server: KhoaServer, text: str) -> None:
    iam = server.client("iam")
    name = unique("prop")
    assert code_of(iam.create_policy, PolicyName=name, PolicyDocument=text) == "MalformedPolicyDocument"
    arn = f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}"
    assert code_of(iam.get_policy, PolicyArn=arn) == "NoSuchEntity"


_made: dict[str, str] = {}


def _secret(server: KhoaServer) -> str:
    """One secret with a known policy for all examples (made once per server)."""
    if f"secret{server.port}" not in _made:
        sm = server.client("secretsmanager")
        arn = sm.create_secret(Name=unique("prop"), SecretString="v")["ARN"]
        sm.put_resource_policy(SecretId=arn, ResourcePolicy=SECRET_POLICY)
        _made[f"secret{server.port}"] = arn
    return _made[f"secret{server.port}"]


def _key(server: KhoaServer) -> str:
    if f"key{server.port}" not in _made:
        _made[f"key{server.port}"] = server.client("kms").create_key(Policy=KEY_POLICY)["KeyMetadata"][
            "KeyId"
        ]
    return _made[f"key{server.port}"]
