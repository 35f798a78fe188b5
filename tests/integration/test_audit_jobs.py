"""Work Khoa does on its own is recorded: scheduled deletions, automatic rotations, expiries."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integration.test_cloudtrail import lookup, seed_account
from tests.support.server import ACCOUNT_ID, KhoaServer

DAY = 86400


def import_expiring_material(kms: Any, key_id: str, valid_to: datetime) -> None:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=public.encrypt(os.urandom(32), oaep),
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=valid_to,
    )


def service_event(cloudtrail: Any, name: str, resource: str) -> dict[str, Any]:
    (event,) = [
        e
        for e in lookup(cloudtrail, "ResourceName", resource)
        if e["EventName"] == name and json.loads(e["CloudTrailEvent"])["eventType"] == "AwsServiceEvent"
    ]
    record: dict[str, Any] = json.loads(event["CloudTrailEvent"])
    assert record["userIdentity"]["invokedBy"] == record["eventSource"]
    assert record["readOnly"] is False
    assert event["ReadOnly"] == "false"
    assert "Username" not in event and "AccessKeyId" not in event
    return record


def test_background_jobs_are_recorded_as_service_events(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms, sm, ssm = (server.client(s) for s in ("kms", "secretsmanager", "ssm"))
    doomed = kms.create_key()["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    rotating = kms.create_key()["KeyMetadata"]
    kms.enable_key_rotation(KeyId=rotating["KeyId"], RotationPeriodInDays=90)
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    import_expiring_material(kms, external["KeyId"], datetime.now(UTC) + timedelta(days=2))
    secret = sm.create_secret(Name="short-lived", SecretString="x")["ARN"]
    sm.delete_secret(SecretId=secret, RecoveryWindowInDays=7)
    expires = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ssm.put_parameter(
        Name="/jobs/expiring",
        Value="x",
        Type="String",
        Tier="Advanced",
        Policies=json.dumps([{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": expires}}]),
    )
    # Another account's due work is recorded in that account.
    other_key_id, other_secret = seed_account(server, "444455556666")
    other_kms = server.client("kms", aws_access_key_id=other_key_id, aws_secret_access_key=other_secret)
    theirs = other_kms.create_key()["KeyMetadata"]
    other_kms.schedule_key_deletion(KeyId=theirs["KeyId"], PendingWindowInDays=7)

    server.advance_clock(91 * DAY)
    assert server.run_jobs() > 0
    cloudtrail = server.client("cloudtrail")

    deleted = service_event(cloudtrail, "DeleteKey", doomed["Arn"])
    assert deleted["eventSource"] == "kms.amazonaws.com"
    assert deleted["recipientAccountId"] == ACCOUNT_ID
    assert deleted["awsRegion"] == "us-east-1"
    assert deleted["resources"] == [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": doomed["Arn"]}]
    assert deleted["additionalEventData"] == {"keyId": doomed["KeyId"]}
    rotated = service_event(cloudtrail, "RotateKey", rotating["Arn"])
    assert rotated["additionalEventData"] == {"keyId": rotating["KeyId"], "rotationType": "AUTOMATIC"}
    expired = service_event(cloudtrail, "DeleteExpiredKeyMaterial", external["Arn"])
    assert expired["resources"][0]["type"] == "AWS::KMS::Key"
    removed = service_event(cloudtrail, "DeleteSecret", secret)
    assert removed["eventSource"] == "secretsmanager.amazonaws.com"
    assert removed["resources"][0]["type"] == "AWS::SecretsManager::Secret"
    parameter_arn = f"arn:aws:ssm:us-east-1:{ACCOUNT_ID}:parameter/jobs/expiring"
    dropped = service_event(cloudtrail, "DeleteParameter", parameter_arn)
    assert dropped["additionalEventData"] == {"name": "/jobs/expiring"}
    assert dropped["resources"][0]["type"] == "AWS::SSM::Parameter"

    # Scoped to the owning account: the other account sees its own deletion only.
    assert lookup(cloudtrail, "ResourceName", theirs["Arn"]) == []
    other_trail = server.client(
        "cloudtrail", aws_access_key_id=other_key_id, aws_secret_access_key=other_secret
    )
    theirs_deleted = service_event(other_trail, "DeleteKey", theirs["Arn"])
    assert theirs_deleted["recipientAccountId"] == "444455556666"

    # Jobs with nothing due record nothing.
    before = len(lookup(cloudtrail, "EventSource", "kms.amazonaws.com"))
    server.run_jobs()
    assert len(lookup(cloudtrail, "EventSource", "kms.amazonaws.com")) == before
