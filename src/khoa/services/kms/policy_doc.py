"""Key policy documents: AWS's default key policy and structural validation of supplied ones.

Policies are stored and validated now; the identity issue makes them decide access.
"""

from __future__ import annotations

import json

from khoa.iam.policy import Policy, PolicyError
from khoa.services.kms import errors


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
    """Refuse documents AWS would refuse with MalformedPolicyDocumentException.

    Key policies are resource policies: every statement names a principal and a resource. The one
    policy parser (khoa.iam.policy) decides what is well formed.
    """
    try:
        json.loads(text)
    except ValueError:
        raise errors.malformed_policy("The key policy is not valid JSON.") from None
    try:
        Policy.parse(text, "resource", require_principal=True, require_resource=True)
    except PolicyError as exc:
        raise errors.malformed_policy(str(exc)) from None
