"""Secrets Manager's error codes, with the messages AWS Secrets Manager returns."""

from __future__ import annotations

from khoa.protocol.errors import AWSError

NOT_FOUND = "Secrets Manager can't find the specified secret."


def not_found(message: str = NOT_FOUND) -> AWSError:
    return AWSError("ResourceNotFoundException", message)


def validation(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def invalid_parameter(message: str) -> AWSError:
    return AWSError("InvalidParameterException", message)


def invalid_request(message: str) -> AWSError:
    return AWSError("InvalidRequestException", message)


def exists(message: str) -> AWSError:
    return AWSError("ResourceExistsException", message)


def secret_exists(name: str) -> AWSError:
    return exists(f"The operation failed because the secret {name} already exists.")


def version_exists() -> AWSError:
    """A write naming an existing version (a token whose version holds another value)."""
    return exists("You can't modify an existing version, you can only create a new version.")


def token_in_use(token: str, arn: str) -> AWSError:
    """CreateSecret, PutSecretValue or UpdateSecret repeating a ClientRequestToken with another value."""
    return exists(
        f"You can't use ClientRequestToken {token} because that value is already in use for a version of "
        f"secret {arn}."
    )


def tag_keys_collide(first: str, second: str) -> AWSError:
    """Two tag keys equal but for case: tag keys are case-sensitive, while the condition keys policies
    test them with (``aws:RequestTag/<key>``, ``aws:ResourceTag/<key>``,
    ``secretsmanager:ResourceTag/<key>``) are not, so such tags could not be told apart by a policy."""
    return invalid_parameter(
        f"The tag keys {first} and {second} differ only in case. Policy condition keys don't distinguish "
        "tag keys by case, so a secret can't have both."
    )


def too_many_tags(limit: int) -> AWSError:
    return invalid_request(f"A secret can have at most {limit} tags.")


def limit_exceeded(message: str) -> AWSError:
    return AWSError("LimitExceededException", message)


def replica_not_permitted() -> AWSError:
    """What AWS answers to a write sent to a replica secret."""
    return invalid_parameter(
        "Operation not permitted on a replica secret. Call must be made in primary secret's region."
    )


def marked_for_deletion() -> AWSError:
    return invalid_request(
        "You can't perform this operation on the secret because it was marked for deletion."
    )


def encryption_failure() -> AWSError:
    return AWSError(
        "EncryptionFailure",
        "Secrets Manager can't encrypt the protected secret text using the "
        "provided KMS key. Check that the KMS key is available, enabled, and not in an invalid state.",
    )


def decryption_failure() -> AWSError:
    return AWSError(
        "DecryptionFailure",
        "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
    )


def cannot_invoke_function() -> AWSError:
    """RotateSecret naming a function Secrets Manager may not invoke (its function policy does not grant
    secretsmanager.amazonaws.com lambda:InvokeFunction): AWS's answer, word for word."""
    return AWSError(
        "AccessDeniedException",
        "Secrets Manager cannot invoke the specified Lambda function. "
        "Ensure that the function policy grants access to the principal secretsmanager.amazonaws.com.",
    )


def malformed_policy(message: str) -> AWSError:
    return AWSError("MalformedPolicyDocumentException", message)


def public_policy() -> AWSError:
    return AWSError(
        "PublicPolicyException",
        "The BlockPublicPolicy parameter is set to true, and the resource policy did not prevent broad "
        "access to the secret.",
    )


def invalid_next_token() -> AWSError:
    return AWSError("InvalidNextTokenException", "The NextToken value is invalid.")
