"""A few AWS-managed policies (``arn:aws:iam::aws:policy/…``), so the usual attachments work.

Each is stored on first use as a managed policy of the pseudo-account ``aws``, so attachments and
boundaries resolve through the same tables as customer-managed policies. The documents keep the
statements that concern the services Khoa implements (KMS, Secrets Manager, SSM, IAM, STS); statements
for other AWS services are left out because nothing here could match them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Engine, Row, insert, select
from sqlalchemy.exc import IntegrityError

from khoa.storage import schema

ACCOUNT = "aws"
_CREATED = 1423247986.0  # 2015-02-06T18:39:46Z, when AWS published its first managed policies


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
}


def arn_of(name: str) -> str:
    return f"arn:aws:iam::aws:policy/{name}"


def _policy_id(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest().upper()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "ANPA" + "".join(alphabet[int(digest[i : i + 2], 16) % 36] for i in range(0, 34, 2))


def ensure(engine: Engine, arn: str) -> Row[Any] | None:
    """The stored row of an AWS-managed policy from the catalogue (created on first use), else None."""
    table = schema.iam_managed_policies
    prefix = "arn:aws:iam::aws:policy/"
    name = arn[len(prefix) :] if arn.startswith(prefix) else ""
    if name not in CATALOGUE:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.arn == arn)).first()
    if row is not None:
        return row
    description, document = CATALOGUE[name]
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(table).values(
                    arn=arn,
                    policy_id=_policy_id(name),
                    account_id=ACCOUNT,
                    name=name,
                    path="/",
                    description=description,
                    default_version="v1",
                    next_version=2,
                    created_at=_CREATED,
                    updated_at=_CREATED,
                )
            )
            conn.execute(
                insert(schema.iam_policy_versions).values(
                    policy_arn=arn, version_id="v1", document=document, created_at=_CREATED
                )
            )
    except IntegrityError:
        pass  # another request stored it first
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.arn == arn)).first()


def ensure_all(engine: Engine) -> None:
    for name in CATALOGUE:
        ensure(engine, arn_of(name))
