"""SecureString values: encrypted by KMS Encrypt with the context ``{"PARAMETER_ARN": arn}``.

The stored ciphertext is exactly what GetParameter returns (base64) when WithDecryption is false, and
decrypting it goes through KMS's key-state checks, so a disabled key makes the value unreadable.
"""

from __future__ import annotations

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms.internal import InternalKms, via
from khoa.services.ssm import errors

SERVICE = "ssm"
DEFAULT_KEY = "alias/aws/ssm"


def _from_kms(ctx: RequestContext, error: AWSError) -> AWSError:
    """A KMS failure as Parameter Store reports it: AccessDeniedException stays one, every other KMS
    error (NotFound, Disabled, KMSInvalidState, InvalidKeyUsage, ...) becomes InvalidKeyId; the
    message carries KMS's own, as AWS's does."""
    message = (
        f"{error.message} (Service: AWSKMS; Status Code: 400; Error Code: "
        f"{error.code}; Request ID: {ctx.request_id}; Proxy: null)"
    )
    if error.code == "AccessDeniedException":
        return AWSError("AccessDeniedException", message)
    return errors.code("InvalidKeyId", message)


def encrypt(kms: InternalKms, ctx: RequestContext, key_id: str | None, arn: str, value: str) -> bytes:
    """The ciphertext of a SecureString value under ``key_id`` (None or alias/aws/ssm: the account's
    AWS-managed key, created on first use), authorised with ssm as kms:ViaService."""
    try:
        key = kms.encryption_key(ctx, key_id if key_id and key_id != DEFAULT_KEY else None, SERVICE)
        return kms.encrypt(via(ctx, SERVICE), key, value.encode(), {"PARAMETER_ARN": arn})
    except AWSError as error:
        raise _from_kms(ctx, error) from None


def decrypt(kms: InternalKms, ctx: RequestContext, arn: str, blob: bytes) -> str:
    """A SecureString value in clear, through KMS Decrypt's key-state and permission checks."""
    try:
        _, plaintext = kms.decrypt(ctx, blob, {"PARAMETER_ARN": arn}, SERVICE)
    except AWSError as error:
        raise _from_kms(ctx, error) from None
    return plaintext.decode()
