"""Python rotation functions used by the rotation tests (registered with ``--python``)."""

from __future__ import annotations

import json
from typing import Any


def simple(event: dict[str, Any], client: Any) -> None:
    """Rotate a JSON secret's "password" field with no outside system to update."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step == "createSecret":
        try:
            client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
            return
        except client.exceptions.ResourceNotFoundException:
            pass
        current = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
        current["password"] = client.get_random_password(PasswordLength=24)["RandomPassword"]
        client.put_secret_value(
            SecretId=arn,
            ClientRequestToken=token,
            SecretString=json.dumps(current),
            VersionStages=["AWSPENDING"],
        )
    elif step == "finishSecret":
        stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
        current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
        if current != token:
            client.update_secret_version_stage(
                SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current
            )


def failing_at_set(event: dict[str, Any], client: Any) -> None:
    if event["Step"] == "setSecret":
        raise RuntimeError("the database is down")
    simple(event, client)


def noop(event: dict[str, Any], client: Any) -> None:
    """A function that succeeds at every step without changing anything (for bookkeeping tests)."""
