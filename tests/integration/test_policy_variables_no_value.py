"""Policy variables with no value, through the wire (red-team policy finding 2).

IAM User Guide, "IAM policy elements: Variables and tags", "Policy variables with no value": a variable
naming a key the request does not have is effectively null. Inverted condition operators
(``StringNotEquals`` ...) match against it, so the guide's ABAC guardrail (Deny with ``StringNotEquals
{"...ResourceTag/team": "${aws:PrincipalTag/team}"}``) denies a caller without the tag; and a Resource or
NotResource entry holding it "will not match any resource", so a ``Deny ... NotResource <your team's
prefix>`` excludes nothing for such a caller and denies it everything.
"""

from __future__ import annotations

from typing import Any

from tests.support.errors import refused
from tests.support.iam import allow, deny
from tests.support.identity import explicit, new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

READ = "secretsmanager:GetSecretValue"
SECRETS = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:"


def test_denies_on_a_variable_with_no_value_apply_to_an_untagged_caller(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    prefix = unique("novalue")
    secret = sm.create_secret(
        Name=f"{prefix}/red/db", SecretString="red", Tags=[{"Key": "team", "Value": "red"}]
    )["ARN"]
    other_team = {"StringNotEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}}
    outside_prefix = {
        "Effect": "Deny",
        "Action": READ,
        "NotResource": f"{SECRETS}{prefix}/${{aws:PrincipalTag/team}}/*",
    }
    for guardrail in (deny(READ, Condition=other_team), outside_prefix):
        member = new_user(server, iam, allow(READ), guardrail, tags={"team": "red"})
        assert member.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] == "red"
        untagged = new_user(server, iam, allow(READ), guardrail)
        assert refused(untagged.client("secretsmanager").get_secret_value, SecretId=secret) == (
            "AccessDeniedException",
            explicit(untagged.arn, READ, secret),
        )
