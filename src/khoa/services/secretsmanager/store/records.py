"""What the store hands out and takes in: a secret's row, a version's row, and a sealed value."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from khoa.storage import schema

# The value kind of a version that has an ID and labels but no value yet: what a rotation creates
# before its function's createSecret step puts the new value in it, as Secrets Manager does (the
# function finds its ClientRequestToken among the secret's versions, labelled AWSPENDING; reading
# it answers ResourceNotFoundException until a value is put).
PLACEHOLDER = schema.SM_NO_VALUE


@dataclass
class SecretRecord:
    secret_id: str
    account_id: str
    region: str
    name: str
    arn: str
    description: str | None
    kms_key_id: str | None
    created_at: float
    last_changed_at: float
    last_accessed_at: float | None
    deleted_at: float | None
    deletion_due_at: float | None
    rotation_enabled: bool
    rotation_lambda_arn: str | None
    rotation_rules: str | None
    last_rotated_at: float | None
    next_rotation_at: float | None
    resource_policy: str | None
    primary_region: str | None
    primary_secret_id: str | None
    owning_service: str | None
    secret_type: str | None
    # Whether the secret has a tag list, possibly empty (schema sm_secrets.tag_list): set by the store
    # when tags are first written, so a new record starts without one.
    tag_list: bool = False

    @classmethod
    def from_row(cls, row: Any) -> SecretRecord:
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def rules(self) -> dict[str, Any] | None:
        return json.loads(self.rotation_rules) if self.rotation_rules else None


@dataclass(frozen=True)
class VersionRecord:
    version_id: str
    created_at: float
    last_accessed_at: float | None
    value_kind: str
    kms_key_arn: str
    encrypted_data_key: bytes
    encrypted_value: bytes

    @classmethod
    def from_row(cls, row: Any) -> VersionRecord:
        return cls(
            row.version_id,
            row.created_at,
            row.last_accessed_at,
            row.value_kind,
            row.kms_key_arn,
            row.encrypted_data_key,
            row.encrypted_value,
        )

    @property
    def placeholder(self) -> bool:
        return self.value_kind == PLACEHOLDER


@dataclass(frozen=True)
class SealedValue:
    """A version's value as stored: sealed by ``values.seal``, or NOTHING."""

    kind: str  # "string" or "binary"; PLACEHOLDER for NOTHING
    kms_key_arn: str
    encrypted_data_key: bytes
    encrypted_value: bytes
    # The value's leak fingerprints ((JSON field or None, HMAC hex): khoa.crypto.fingerprint), written
    # with the version in its transaction (khoa.storage.fingerprints); never the value itself.
    fingerprints: tuple[tuple[str | None, str], ...] = ()


NOTHING = SealedValue(PLACEHOLDER, "", b"", b"")  # a rotation's version before it has a value
