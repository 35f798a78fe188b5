"""A few AWS-managed policies (``arn:aws:iam::aws:policy/…``), so the usual attachments work.

Each is stored on first use as a managed policy of the pseudo-account ``aws`` (by the store:
``PolicyStore.aws_managed``), so attachments and boundaries resolve through the same tables as
customer-managed policies. The documents keep the
statements that concern the services Khoa implements (KMS, Secrets Manager, SSM, IAM, STS); statements
for other AWS services are left out because nothing here could match them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ACCOUNT = "aws"
CREATED = 1423247986.0  # 2015-02-06T18:39:46Z, when AWS published its first managed policies
_PREFIX = "arn:aws:iam::aws:policy/"


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, indent=4)


def _allow(*actions: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": "*"}


CATALOGUE: dict[str, tuple[str, str]] = {
    # name: (description, document)
    "AdministratorAccess": (
        "Provides full access to AWS services and resources.",
        _doc({"Effect": "Allow", "Action": "*", "Resource": "*"}),
    ),
    "PowerUserAccess": (
        "Provides full access to AWS services and resources, but does not allow management of Users "
        "and groups.",
        _doc(
            {"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "account:*"], "Resource": "*"},
            _allow(
                "iam:CreateServiceLinkedRole",
                "iam:DeleteServiceLinkedRole",
                "iam:ListRoles",
                "organizations:DescribeOrganization",
                "account:ListRegions",
                "account:GetAccountInformation",
            ),
        ),
    ),
    "ReadOnlyAccess": (
        "Provides read-only access to AWS services and resources.",
        _doc(
            _allow(
                "iam:Generate*",
                "iam:Get*",
                "iam:List*",
                "iam:Simulate*",
                "kms:Describe*",
                "kms:Get*",
                "kms:List*",
                "secretsmanager:Describe*",
                "secretsmanager:GetResourcePolicy",
                "secretsmanager:List*",
                "ssm:Describe*",
                "ssm:Get*",
                "ssm:List*",
            )
        ),
    ),
    "IAMFullAccess": ("Provides full access to IAM via the AWS Management Console.", _doc(_allow("iam:*"))),
    "IAMReadOnlyAccess": (
        "Provides read only access to IAM via the AWS Management Console.",
        _doc(
            _allow(
                "iam:GenerateCredentialReport",
                "iam:GenerateServiceLastAccessedDetails",
                "iam:Get*",
                "iam:List*",
                "iam:SimulateCustomPolicy",
                "iam:SimulatePrincipalPolicy",
            )
        ),
    ),
    "AWSKeyManagementServicePowerUser": (
        "Provides access to AWS Key Management Service (AWS KMS).",
        _doc(
            _allow(
                "kms:CreateAlias",
                "kms:CreateKey",
                "kms:DeleteAlias",
                "kms:Describe*",
                "kms:GenerateRandom",
                "kms:Get*",
                "kms:List*",
                "kms:TagResource",
                "kms:UntagResource",
                "iam:ListGroups",
                "iam:ListRoles",
                "iam:ListUsers",
            )
        ),
    ),
    "SecretsManagerReadWrite": (
        "Provides read/write access to AWS Secrets Manager via the AWS Management Console.",
        _doc(_allow("secretsmanager:*", "kms:DescribeKey", "kms:ListAliases", "kms:ListKeys")),
    ),
    "AmazonSSMReadOnlyAccess": (
        "Provides read only access to Amazon SSM.",
        _doc(_allow("ssm:Describe*", "ssm:Get*", "ssm:List*")),
    ),
    # Attached by Khoa's leak response (khoa.services.leaks.respond) to the user of a leaked access key,
    # as AWS attaches its own to a user whose key was exposed. AWS's version denies a list of actions
    # that cost money; every action Khoa serves is worth protecting, so Khoa's denies them all.
    "AWSCompromisedKeyQuarantineV2": (
        "Denies every action; attached by Khoa when one of the user's access keys was found leaked. "
        "Do NOT remove this policy before the leaked key is deleted and the user's activity reviewed.",
        _doc({"Effect": "Deny", "Action": "*", "Resource": "*"}),
    ),
}
QUARANTINE = "AWSCompromisedKeyQuarantineV2"


def arn_of(name: str) -> str:
    return f"{_PREFIX}{name}"


def policy_id(name: str) -> str:
    """A stable policy ID for a catalogue policy (the same in every Khoa database)."""
    digest = hashlib.sha256(name.encode()).hexdigest().upper()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "ANPA" + "".join(alphabet[int(digest[i : i + 2], 16) % 36] for i in range(0, 34, 2))


def name_of(arn: str) -> str | None:
    """The catalogue name of an AWS-managed policy ARN; None when the catalogue has no such policy."""
    name = arn[len(_PREFIX) :] if arn.startswith(_PREFIX) else ""
    return name if name in CATALOGUE else None


def document(arn: str) -> str | None:
    """The (only, default) version's document of a catalogue policy; None when it is not one."""
    name = name_of(arn)
    return None if name is None else CATALOGUE[name][1]
