"""The Secrets Manager authorisation table: every operation Khoa serves and the action it is
authorised as.

All are checked by :func:`khoa.services.secretsmanager.authz.authorize_request`:
``secretsmanager:<Operation>`` on the secret named by ``SecretId`` (with its resource policy and tags),
on the ARN a new secret would have for CreateSecret (with secretsmanager:TagResource when it has Tags and
secretsmanager:ReplicateSecretToRegions when it has AddReplicaRegions), and on ``*`` for ListSecrets,
GetRandomPassword, BatchGetSecretValue (with secretsmanager:ListSecrets when it has Filters; each secret it
returns is then authorised for GetSecretValue) and ValidateResourcePolicy without a SecretId.
TagResource and UntagResource are also refused when they would take the caller's own permission for
them away (authz.py). The list is spelled out so that a new handler without an
entry stops the service from building.
"""

from __future__ import annotations

from functools import partial

from khoa.services.authorization import AuthorizationTable, same_check
from khoa.services.secretsmanager import authz
from khoa.services.secretsmanager.backend import SecretsBackend

OPERATIONS = (
    "CreateSecret",
    "DescribeSecret",
    "GetSecretValue",
    "BatchGetSecretValue",
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "ListSecretVersionIds",
    "ListSecrets",
    "DeleteSecret",
    "RestoreSecret",
    "GetRandomPassword",
    "RotateSecret",
    "CancelRotateSecret",
    "TagResource",
    "UntagResource",
    "GetResourcePolicy",
    "PutResourcePolicy",
    "DeleteResourcePolicy",
    "ValidateResourcePolicy",
    "ListResourcePolicies",
    "ReplicateSecretToRegions",
    "RemoveRegionsFromReplication",
    "StopReplicationToReplica",
    "AssociateCrossAccountReplica",
    "DisassociateCrossAccountReplica",
)


def table(sm: SecretsBackend) -> AuthorizationTable:
    """The table, its one check bound to the service's collaborators (its authoriser and store)."""
    return AuthorizationTable(
        "secretsmanager",
        same_check(
            "secretsmanager",
            partial(authz.authorize_request, sm),
            OPERATIONS,
            RotateSecret=("secretsmanager:RotateSecret", "lambda:InvokeFunction"),
            # With Tags / AddReplicaRegions (CreateSecret API reference, "Required permissions").
            CreateSecret=(
                "secretsmanager:CreateSecret",
                "secretsmanager:TagResource",
                "secretsmanager:ReplicateSecretToRegions",
            ),
            # With Filters ("If you use filters, you must also have secretsmanager:ListSecrets").
            BatchGetSecretValue=("secretsmanager:BatchGetSecretValue", "secretsmanager:ListSecrets"),
        ),
    )
