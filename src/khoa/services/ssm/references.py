"""Reading Secrets Manager secrets through Parameter Store: ``/aws/reference/secretsmanager/<secret-id>``.

As in AWS, WithDecryption must be true, a ``:version-id`` or ``:label`` selector picks the version, and
the secret's own permissions and KMS key apply because the read goes through Secrets Manager's code.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.secretsmanager import names as secret_names
from khoa.services.secretsmanager import operations as secret_operations
from khoa.services.ssm import errors

PREFIX = "/aws/reference/secretsmanager/"


def secret_parameter(ctx: RequestContext, name: str, with_decryption: bool) -> dict[str, Any]:
    if not with_decryption:
        raise errors.validation("WithDecryption flag must be True for retrieving a Secret Manager secret.")
    reference = name[len(PREFIX) :]
    if reference.startswith("arn:"):  # a secret ARN has six colons of its own
        parts = reference.split(":", 7)
        secret_id, sep, selector = ":".join(parts[:7]), ":" if len(parts) > 7 else "", "".join(parts[7:])
    else:
        secret_id, sep, selector = reference.partition(":")
    version_id = stage = None
    if sep:
        if len(selector) >= 32 and "-" in selector:
            version_id = selector
        else:
            stage = selector
    try:
        record = secret_names.require(ctx, ctx.runtime.secrets.store, secret_id)
        from khoa.services.secretsmanager.authz import authorize_secret

        authorize_secret(
            ctx, "secretsmanager:GetSecretValue", record, {"VersionStage": stage} if stage else {}
        )
        value = secret_operations.read_value(ctx, record, version_id, stage)
    except AWSError as error:
        if error.code in ("ResourceNotFoundException", "InvalidRequestException"):
            raise errors.not_found(f"Secret {secret_id} not found.") from None
        raise
    # SourceResult is Secrets Manager's GetSecretValue result as JSON, CreatedDate in epoch seconds.
    source: dict[str, Any] = {k: v for k, v in value.items() if k != "SecretBinary"}
    source["CreatedDate"] = value["CreatedDate"].timestamp()
    if "SecretBinary" in value:
        source["SecretBinary"] = base64.b64encode(value["SecretBinary"]).decode()
    parameter: dict[str, Any] = {
        "Name": name,
        "Type": "SecureString",
        "Value": source["SecretString"] if "SecretString" in source else source["SecretBinary"],
        "Version": 0,
        "SourceResult": json.dumps(source),
        "LastModifiedDate": value["CreatedDate"],
        "ARN": value["ARN"],
        "DataType": "text",
    }
    if sep:
        parameter["Selector"] = f":{selector}"
    return parameter
