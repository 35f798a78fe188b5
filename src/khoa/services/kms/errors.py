"""KMS's error codes, with the messages AWS KMS returns."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def not_found(message: str) -> AWSError:
    return AWSError("NotFoundException", message)


def key_not_found(arn: str) -> AWSError:
    return not_found(f"Key '{arn}' does not exist")


def invalid_key_id(ref: str) -> AWSError:
    return not_found(f"Invalid keyId '{ref}'")


def invalid_state(message: str) -> AWSError:
    return AWSError("KMSInvalidStateException", message)


def disabled(arn: str) -> AWSError:
    return AWSError("DisabledException", f"{arn} is disabled.")


def invalid_ciphertext() -> AWSError:
    return AWSError("InvalidCiphertextException", "")


def incorrect_key() -> AWSError:
    return AWSError(
        "IncorrectKeyException",
        "The key ID in the request does not identify a CMK that can perform this operation.",
    )


def invalid_key_usage(message: str) -> AWSError:
    return AWSError("InvalidKeyUsageException", message)


def already_exists(message: str) -> AWSError:
    return AWSError("AlreadyExistsException", message)


def invalid_alias_name(message: str) -> AWSError:
    return AWSError("InvalidAliasNameException", message)


def limit_exceeded(message: str) -> AWSError:
    return AWSError("LimitExceededException", message)


def conflict(message: str) -> AWSError:
    return AWSError("ConflictException", message)


def malformed_policy(message: str) -> AWSError:
    return AWSError("MalformedPolicyDocumentException", message)


def invalid_arn(message: str) -> AWSError:
    return AWSError("InvalidArnException", message)


def tag_error(message: str) -> AWSError:
    return AWSError("TagException", message)


def invalid_grant_token() -> AWSError:
    return AWSError("InvalidGrantTokenException", "The grant token is invalid.")


def invalid_grant_id() -> AWSError:
    return AWSError("InvalidGrantIdException", "The grant ID is invalid.")


def unsupported(message: str) -> AWSError:
    return AWSError("UnsupportedOperationException", message)


def invalid_signature() -> AWSError:
    return AWSError("KMSInvalidSignatureException", "")


def invalid_mac() -> AWSError:
    return AWSError("KMSInvalidMacException", "")


def invalid_marker() -> AWSError:
    return AWSError("InvalidMarkerException", "The marker is invalid.")


def validation(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def dry_run() -> AWSError:
    return AWSError(
        "DryRunOperationException", "The request would have succeeded, but the DryRun option is set.", 412
    )
