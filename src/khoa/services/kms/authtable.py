"""The KMS authorisation table: every KMS operation Khoa serves and the action(s) it is authorised as.

All are checked by :func:`khoa.services.kms.authz.authorize_request`, over the service's
collaborators: ``kms:<Operation>`` on the key the request names (key policy, then IAM policies, then
grants), on the alias and its keys for alias operations, as ``kms:ReEncryptFrom`` /
``kms:ReEncryptTo`` on the source and destination keys for ReEncrypt, and on ``*`` for operations
that name no key. The operation list is spelled out (not taken
from the handlers) so that adding a handler without adding it here stops the service from building.
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, same_check
from khoa.services.kms import authz
from khoa.services.kms.backend import KmsBackend

OPERATIONS = (
    # keys and their life cycle
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "EnableKey",
    "DisableKey",
    "UpdateKeyDescription",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "ReplicateKey",
    "UpdatePrimaryRegion",
    "GetKeyLastUsage",
    # key policies
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    # aliases (authorised on the alias and on each key it points at, before and after)
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
    "ListAliases",
    # cryptographic operations
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateRandom",
    "GenerateMac",
    "VerifyMac",
    "Sign",
    "Verify",
    "GetPublicKey",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
    # grants
    "CreateGrant",
    "ListGrants",
    "ListRetirableGrants",
    "RetireGrant",
    "RevokeGrant",
    # imported key material
    "GetParametersForImport",
    "ImportKeyMaterial",
    "DeleteImportedKeyMaterial",
    # rotation
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "ListKeyRotations",
    "RotateKeyOnDemand",
    # tags
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    # custom key stores (external key stores; authorised on "*", as AWS does)
    "CreateCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
    "DescribeCustomKeyStores",
)


def table(kms: KmsBackend) -> AuthorizationTable:
    """The table whose one check authorises with ``kms``'s key store and authoriser."""

    def check(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        return authz.authorize_request(kms, ctx, params)

    return AuthorizationTable(
        "kms",
        same_check(
            "kms",
            check,
            OPERATIONS,
            ReEncrypt=("kms:ReEncryptFrom", "kms:ReEncryptTo"),
        ),
    )
