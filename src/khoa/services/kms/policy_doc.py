"""Key policy documents: AWS's default key policy and structural validation of supplied ones.

Policies are stored and validated now; the identity issue makes them decide access.
"""

from __future__ import annotations

import json
from typing import Any

from khoa.services.kms import errors

_STATEMENT_KEYS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}


def default_key_policy(account_id: str) -> str:
    """The policy AWS attaches when CreateKey gets none (the "default key policy").

    Laid out byte for byte as AWS returns it from GetKeyPolicy (Jackson's pretty printer).
    """
    return (
        "{\n"
        '  "Version" : "2012-10-17",\n'
        '  "Id" : "key-default-1",\n'
        '  "Statement" : [ {\n'
        '    "Sid" : "Enable IAM User Permissions",\n'
        '    "Effect" : "Allow",\n'
        '    "Principal" : {\n'
        f'      "AWS" : "arn:aws:iam::{account_id}:root"\n'
        "    },\n"
        '    "Action" : "kms:*",\n'
        '    "Resource" : "*"\n'
        "  } ]\n"
        "}"
    )


def validate_key_policy(text: str) -> None:
    """Refuse documents AWS would refuse with MalformedPolicyDocumentException."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise errors.malformed_policy("The key policy is not valid JSON.") from None
    if not isinstance(document, dict):
        raise errors.malformed_policy("Policy document must be a JSON object")
    version = document.get("Version")
    if version is not None and version not in ("2012-10-17", "2008-10-17"):
        raise errors.malformed_policy(f"Invalid policy version: {version}")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise errors.malformed_policy("Policy document must contain at least one Statement")
    for statement in statements:
        if not isinstance(statement, dict):
            raise errors.malformed_policy("Each Statement must be a JSON object")
        unknown = set(statement) - _STATEMENT_KEYS
        if unknown:
            raise errors.malformed_policy(f"Unknown field in Statement: {sorted(unknown)[0]}")
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise errors.malformed_policy("Statement Effect must be Allow or Deny")
        if "Principal" not in statement and "NotPrincipal" not in statement:
            raise errors.malformed_policy("Policy contains a statement with no principal.")
        if "Action" not in statement and "NotAction" not in statement:
            raise errors.malformed_policy("Policy contains a statement with no action.")
        if "Resource" not in statement and "NotResource" not in statement:
            raise errors.malformed_policy("Policy contains a statement with no resource.")
