"""RotateSecret needs ``lambda:InvokeFunction`` on the rotation function, as AWS requires.

A rotation function acts with the role it was registered with. Without this check, a caller allowed
to rotate one secret could point a powerful function at it and borrow that role (a confused deputy).
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.errors import code_of, refused
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import KhoaServer


def _function(server: KhoaServer) -> str:
    return server.register_function(unique("rotator"), "tests.support.rotators:simple")


def test_rotate_secret_needs_invoke_permission_on_the_function(server: KhoaServer) -> None:
    iam, root_sm = server.client("iam"), server.client("secretsmanager")
    function_arn = _function(server)
    secret_arn = root_sm.create_secret(Name=unique("deputy"), SecretString=json.dumps({"password": "x"}))[
        "ARN"
    ]
    rotate_only: dict[str, Any] = {
        "Effect": "Allow",
        "Action": ["secretsmanager:RotateSecret", "secretsmanager:DescribeSecret"],
        "Resource": secret_arn,
    }
    caller = new_user(server, iam, rotate_only)
    sm = caller.client("secretsmanager")

    code, message = refused(sm.rotate_secret, SecretId=secret_arn, RotationLambdaARN=function_arn)
    assert code == "AccessDeniedException"
    assert f"lambda:InvokeFunction on resource: {function_arn}" in message
    # Nothing was configured by the refused call.
    assert "RotationLambdaARN" not in root_sm.describe_secret(SecretId=secret_arn)

    invoke = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arn}
    allowed = new_user(server, iam, rotate_only, invoke)
    assert (
        code_of(
            allowed.client("secretsmanager").rotate_secret,
            SecretId=secret_arn,
            RotationLambdaARN=function_arn,
            RotateImmediately=False,
            RotationRules={"AutomaticallyAfterDays": 30},
        )
        == "ok"
    )
    # Rotating again without naming the function still invokes the stored one: still needs the permission.
    code, _ = refused(sm.rotate_secret, SecretId=secret_arn)
    assert code == "AccessDeniedException"
