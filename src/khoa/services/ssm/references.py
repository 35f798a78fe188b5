"""Reading Secrets Manager secrets through Parameter Store: ``/aws/reference/secretsmanager/<secret-id>``.

As in AWS, WithDecryption must be true, a ``:version-id`` or ``:label`` selector picks the version, and
the secret's own permissions and KMS key apply because the read goes through Secrets Manager's own
GetSecretValue: its authorisation rule, then its handler (:func:`reader`). Parameter Store imports
nothing of Secrets Manager; it depends only on that operation's public contract.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.base import Service
from khoa.services.ssm import errors
from khoa.services.ssm.backend import SecretReader

PREFIX = "/aws/reference/secretsmanager/"
GET_SECRET_VALUE = "GetSecretValue"


def reader(secrets: Service) -> SecretReader:
    """GetSecretValue of the Secrets Manager service ``secrets``, run as its pipeline would run it:
    the service's authorisation rule for GetSecretValue first (so the caller needs
    ``secretsmanager:GetSecretValue`` on the secret, under its resource policy), then its handler.
    The request context is the caller's, renamed to that operation, so the rule evaluates the right
    action and AccessDenied names it."""
    handler = secrets.handlers[GET_SECRET_VALUE]

    def read(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        secret_ctx = replace(ctx, service=secrets.name, operation=GET_SECRET_VALUE)
        secrets.authorizer(secret_ctx, params)
        return handler(secret_ctx, params)

    return read


def _request(name: str) -> tuple[dict[str, Any], str | None]:
    """GetSecretValue's parameters for a reference name, and its selector (``:label`` / ``:version``)."""
    reference = name[len(PREFIX) :]
    if reference.startswith("arn:"):  # a secret ARN has six colons of its own
        parts = reference.split(":", 7)
        secret_id, sep, selector = ":".join(parts[:7]), ":" if len(parts) > 7 else "", "".join(parts[7:])
    else:
        secret_id, sep, selector = reference.partition(":")
    params: dict[str, Any] = {"SecretId": secret_id}
    if sep:
        if len(selector) >= 32 and "-" in selector:
            params["VersionId"] = selector
        else:
            params["VersionStage"] = selector
    return params, (selector if sep else None)


def secret_parameter(
    read_secret: SecretReader, ctx: RequestContext, name: str, with_decryption: bool
) -> dict[str, Any]:
    """The parameter GetParameter(s) returns for a reference name."""
    if not with_decryption:
        raise errors.validation("WithDecryption flag must be True for retrieving a Secret Manager secret.")
    params, selector = _request(name)
    # The parameter's name is the whole reference path to the secret (without a selector, which
    # Selector carries, as for any parameter), and so is the name a missing secret is reported by.
    full_name = PREFIX + params["SecretId"]
    try:
        value = read_secret(ctx, params)
    except AWSError as error:
        if error.code in ("ResourceNotFoundException", "InvalidRequestException"):
            raise errors.not_found(f"Secret {full_name} not found.") from None
        raise
    # SourceResult is Secrets Manager's GetSecretValue result as JSON, CreatedDate in epoch seconds.
    source: dict[str, Any] = {k: v for k, v in value.items() if k != "SecretBinary"}
    source["CreatedDate"] = value["CreatedDate"].timestamp()
    if "SecretBinary" in value:
        source["SecretBinary"] = base64.b64encode(value["SecretBinary"]).decode()
    parameter: dict[str, Any] = {
        "Name": full_name,
        "Type": "SecureString",
        "Value": source["SecretString"] if "SecretString" in source else source["SecretBinary"],
        "Version": 0,
        "SourceResult": json.dumps(source),
        "LastModifiedDate": value["CreatedDate"],
        "ARN": value["ARN"],
        "DataType": "text",
    }
    if selector is not None:
        parameter["Selector"] = f":{selector}"
    return parameter
