"""Auto-unseal: the root key kept wrapped by a key that lives elsewhere (Vault's awskms and pkcs11 seals).

``awskms`` wraps it with KMS Encrypt under a key id at any AWS-KMS-compatible endpoint (AWS KMS, or
another Khoa), credentials from the standard AWS chain; ``pkcs11`` wraps it with AES-256-GCM inside an
HSM under a non-extractable key found by label. Only the wrapped blob is stored (khoa_meta); the
process unwraps it at start. Errors name what failed, never a key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from khoa.crypto.barrier import ROOT_KEY_BYTES
from khoa.crypto.seal import SealError

# Bound to every wrap: a blob made for another purpose does not unwrap as a root key.
_CONTEXT = {"khoa:purpose": "root-key"}
_AAD = b"khoa:purpose=root-key"
_GCM_IV_BYTES = 12


class KeyWrapper(Protocol):
    backend: str

    def describe(self) -> dict[str, str]:
        """Where the wrapping key lives (stored beside the blob, shown by errors; nothing secret)."""
        ...

    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, blob: bytes) -> bytes: ...


class AwsKmsWrapper:
    backend = "awskms"

    def __init__(self, key_id: str, *, endpoint: str = "", region: str = "") -> None:
        if not key_id:
            raise SealError("the awskms seal backend needs KHOA_SEAL_AWSKMS_KEY_ID")
        self.key_id = key_id
        self.endpoint = endpoint
        self.region = region

    def describe(self) -> dict[str, str]:
        return {"key_id": self.key_id, "endpoint": self.endpoint, "region": self.region}

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        # A session of its own: boto3's default session resolves credentials once per process and
        # keeps them, whatever the environment says later (another caller may have made it first).
        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint or None,
            region_name=self.region or None,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10
            ),
        )

    def _call(self, what: str, call: Callable[[Any], bytes]) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(self._client())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            message = exc.response.get("Error", {}).get("Message", "")
            raise SealError(
                f"awskms seal: {what} with key {self.key_id} failed: {code} {message}".strip()
            ) from None
        except BotoCoreError as exc:
            raise SealError(
                f"awskms seal: {what} with key {self.key_id} failed: {type(exc).__name__}"
            ) from None

    def wrap(self, key: bytes) -> bytes:
        return self._call(
            "Encrypt",
            lambda kms: kms.encrypt(KeyId=self.key_id, Plaintext=key, EncryptionContext=_CONTEXT)[
                "CiphertextBlob"
            ],
        )

    def unwrap(self, blob: bytes) -> bytes:
        key = self._call(
            "Decrypt",
            lambda kms: kms.decrypt(KeyId=self.key_id, CiphertextBlob=blob, EncryptionContext=_CONTEXT)[
                "Plaintext"
            ],
        )
        if len(key) != ROOT_KEY_BYTES:
            raise SealError("awskms seal: the unwrapped value is not a 256-bit root key")
        return key


class Pkcs11Wrapper:
    """AES-256-GCM in the token, under the secret key labelled ``key_label`` (created, sensitive and
    non-extractable, when missing and ``create`` is set)."""

    backend = "pkcs11"

    def __init__(self, module: str, token_label: str, key_label: str, pin_env: str) -> None:
        if not module or not token_label:
            raise SealError(
                "the pkcs11 seal backend needs KHOA_SEAL_PKCS11_MODULE and KHOA_SEAL_PKCS11_TOKEN_LABEL"
            )
        self.module = module
        self.token_label = token_label
        self.key_label = key_label
        self.pin_env = pin_env

    def describe(self) -> dict[str, str]:
        return {"module": self.module, "token_label": self.token_label, "key_label": self.key_label}

    def _with_key(self, create: bool, work: Callable[[Any, Any], bytes]) -> bytes:
        try:
            import pkcs11
            from pkcs11 import Attribute, KeyType, ObjectClass
        except ImportError:
            raise SealError(
                "the pkcs11 seal backend needs python-pkcs11 (pip install python-pkcs11)"
            ) from None
        pin = os.environ.get(self.pin_env, "")
        if not pin:
            raise SealError(f"the pkcs11 seal backend needs the token's user PIN in ${self.pin_env}")
        try:
            lib = pkcs11.lib(self.module)
            token = lib.get_token(token_label=self.token_label)
            with token.open(user_pin=pin, rw=True) as session:
                try:
                    key = session.get_key(
                        object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self.key_label
                    )
                except pkcs11.NoSuchKey:
                    if not create:
                        raise SealError(
                            f"pkcs11 seal: no AES key labelled {self.key_label!r} "
                            f"in token {self.token_label!r}"
                        ) from None
                    key = session.generate_key(
                        KeyType.AES,
                        256,
                        label=self.key_label,
                        store=True,
                        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                    )
                return work(key, pkcs11)
        except SealError:
            raise
        except Exception as exc:  # noqa: BLE001 - the module's errors: named by type, never a PIN
            raise SealError(
                f"pkcs11 seal: token {self.token_label!r} in {self.module} failed: {type(exc).__name__}"
            ) from None

    def wrap(self, key: bytes) -> bytes:
        def encrypt(hsm_key: Any, pkcs11: Any) -> bytes:
            iv = os.urandom(_GCM_IV_BYTES)
            sealed = hsm_key.encrypt(
                key,
                mechanism=pkcs11.Mechanism.AES_GCM,
                mechanism_param=pkcs11.mechanisms.GCMParams(iv, _AAD, 128),
            )
            return iv + bytes(sealed)

        return self._with_key(True, encrypt)

    def unwrap(self, blob: bytes) -> bytes:
        def decrypt(hsm_key: Any, pkcs11: Any) -> bytes:
            iv, sealed = blob[:_GCM_IV_BYTES], blob[_GCM_IV_BYTES:]
            return bytes(
                hsm_key.decrypt(
                    sealed,
                    mechanism=pkcs11.Mechanism.AES_GCM,
                    mechanism_param=pkcs11.mechanisms.GCMParams(iv, _AAD, 128),
                )
            )

        key = self._with_key(False, decrypt)
        if len(key) != ROOT_KEY_BYTES:
            raise SealError("pkcs11 seal: the unwrapped value is not a 256-bit root key")
        return key
