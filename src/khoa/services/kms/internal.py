"""KMS as other services use it (Secrets Manager, Parameter Store): :class:`InternalKms`.

These calls go through the same key resolution, key-state and usage checks as the public API, so a
disabled or deleted key makes a secret unreadable exactly as it does in AWS. The context records the
calling service (``kms:ViaService``) for policy evaluation. AWS-managed keys (``alias/aws/<service>``)
are created on first use, as AWS does.

Another service receives an ``InternalKms`` among its collaborators (built by the composition root
over the one :class:`KmsBackend`), so it reaches KMS only through these few calls.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from khoa.cache import private_copy
from khoa.crypto import ciphertext, keymaterial
from khoa.protocol.context import RequestContext
from khoa.services.kms import errors, external, specs
from khoa.services.kms.authz import authorize_key
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.keys import generate_material
from khoa.services.kms.resolve import alias_target, require_usable, resolve_key
from khoa.services.kms.store import KeyRecord as KeyRecord  # published: other services hold keys as this
from khoa.services.kms.store import key_arn, new_material_id

_MANAGED_DESCRIPTIONS = {
    "secretsmanager": "Default key that protects my Secrets Manager data when no other key is defined",
    "ssm": "Default key that protects my SSM parameters when no other key is defined",
}


def via(ctx: RequestContext, service: str) -> RequestContext:
    """The context for a KMS call a service makes on its caller's behalf."""
    kms_ctx = private_copy(ctx)  # every field as the caller's, but for these two
    kms_ctx.service = "kms"
    kms_ctx.extras = {**ctx.extras, "kms:ViaService": f"{service}.{ctx.region}.amazonaws.com"}
    return kms_ctx


def _managed_policy(account_id: str, region: str, service: str) -> str:
    via_service = f"{service}.{region}.amazonaws.com"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": f"auto-{service}-2",
            "Statement": [
                {
                    "Sid": f"Allow access through {service} for all principals in the account that are "
                    f"authorized to use {service}",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:CreateGrant",
                        "kms:DescribeKey",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {"kms:CallerAccount": account_id, "kms:ViaService": via_service}
                    },
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                    "Resource": "*",
                },
            ],
        },
        indent=2,
    )


def aws_managed_key(kms: KmsBackend, ctx: RequestContext, service: str) -> KeyRecord:
    """The ``alias/aws/<service>`` key of the caller's account and region, created on first use."""
    alias = f"alias/aws/{service}"
    target = alias_target(kms, ctx, alias)
    if target is None:
        now = ctx.now.timestamp()
        key_id = str(uuid.uuid4())
        record = KeyRecord(
            key_id=key_id,
            account_id=ctx.account_id,
            region=ctx.region,
            description=_MANAGED_DESCRIPTIONS.get(service, f"Default key for {service}"),
            key_spec=specs.SYMMETRIC,
            key_usage="ENCRYPT_DECRYPT",
            origin="AWS_KMS",
            key_manager="AWS",
            state="Enabled",
            created_at=now,
            deletion_date=None,
            pending_window_days=None,
            policy=_managed_policy(ctx.account_id, ctx.region, service),
            rotation_enabled=True,
            rotation_period_days=365,
            next_rotation_at=now + 365 * 86400.0,
            on_demand_started_at=None,
            current_version_id=new_material_id(),
            valid_to=None,
            expiration_model=None,
            multi_region=False,
        )
        kms.store.keys.insert(record, generate_material(specs.SYMMETRIC), now)
        if not kms.store.aliases.create(ctx.account_id, ctx.region, alias, key_id, now):
            kms.store.keys.destroy(key_id)  # another process created it first; use theirs
        target = alias_target(kms, ctx, alias)
        assert target is not None
    record_found = kms.store.keys.get(ctx.account_id, ctx.region, target)
    if record_found is None:
        raise errors.key_not_found(key_arn(ctx.region, ctx.account_id, target))
    return record_found


def _material(kms: KmsBackend, key: KeyRecord, version_id: str) -> bytes:
    material = kms.store.keys.material(key.key_id, version_id)
    if material is None:
        raise errors.invalid_ciphertext()
    return material


@dataclass(frozen=True)
class InternalKms:
    """The KMS calls another service makes on its caller's behalf, over KMS's collaborators."""

    kms: KmsBackend

    def encryption_key(self, ctx: RequestContext, key_ref: str | None, service: str) -> KeyRecord:
        """The symmetric key a service should encrypt with: the named one, or the AWS-managed default."""
        kms_ctx = via(ctx, service)
        key = (
            resolve_key(self.kms, kms_ctx, key_ref, across_accounts=True)
            if key_ref
            else aws_managed_key(self.kms, kms_ctx, service)
        )
        require_usable(key, "ENCRYPT_DECRYPT", "Encrypt")
        if key.key_spec != specs.SYMMETRIC:
            raise errors.invalid_key_usage(f"{key.arn} is not a symmetric encryption KMS key.")
        return key

    def encrypt(
        self,
        ctx: RequestContext,
        key: KeyRecord,
        plaintext: bytes,
        context: dict[str, str],
        action: str = "kms:Encrypt",
    ) -> bytes:
        """Encrypt for another service, authorised as ``action`` with that service as kms:ViaService
        (``ctx`` is the one :func:`via` made)."""
        authorize_key(self.kms, ctx, action, key, {}, context)
        version_id = key.current_version_id
        if version_id is None:
            raise errors.invalid_state(f"{key.arn} is pending import.")
        material = _material(self.kms, key, version_id)
        if key.origin == external.ORIGIN:
            return external.encrypt(self.kms, ctx, key, material, version_id, plaintext, context)
        return ciphertext.encrypt(material, key.key_id, version_id, plaintext, context)

    def generate_data_key(
        self, ctx: RequestContext, key: KeyRecord, context: dict[str, str]
    ) -> tuple[bytes, bytes]:
        """A fresh 256-bit data key and its ciphertext under ``key`` (``ctx`` from :func:`via`)."""
        plaintext = keymaterial.random_bytes(32)
        return plaintext, self.encrypt(ctx, key, plaintext, context, "kms:GenerateDataKey")

    def decrypt(
        self, ctx: RequestContext, blob: bytes, context: dict[str, str], service: str
    ) -> tuple[KeyRecord, bytes]:
        """Decrypt a blob this account made, refusing keys in the wrong state as KMS Decrypt does."""
        kms_ctx = via(ctx, service)
        try:
            parsed = ciphertext.parse(blob)
        except ciphertext.InvalidCiphertext:
            raise errors.invalid_ciphertext() from None
        key = self.kms.store.keys.by_blob(ctx.region, parsed.key_id)
        if key is None:
            raise errors.key_not_found(key_arn(ctx.region, ctx.account_id, parsed.key_id))
        authorize_key(self.kms, kms_ctx, "kms:Decrypt", key, {}, context)
        require_usable(key, "ENCRYPT_DECRYPT", "Decrypt")
        cipher = self.kms.store.keys.cipher(key.key_id, parsed.material_id)
        if cipher is None:
            raise errors.invalid_ciphertext()
        try:
            opened = ciphertext.decrypt(cipher, parsed, context)
        except ciphertext.InvalidCiphertext:
            raise errors.invalid_ciphertext() from None
        if key.origin == external.ORIGIN:
            material = _material(self.kms, key, parsed.material_id)
            opened = external.decrypt(self.kms, kms_ctx, key, material, parsed.material_id, opened, context)
        return key, opened
