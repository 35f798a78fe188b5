"""AWS-shaped errors.

Every failure a caller can see is an :class:`AWSError`: it carries the exact ``__type`` code, message
and HTTP status AWS uses, so SDKs raise the same exception classes against Khoa as against AWS.
"""

from __future__ import annotations


class AWSError(Exception):
    """An error that is returned to the caller in the AWS error shape."""

    def __init__(self, code: str, message: str | None = "", status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def validation_error(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def serialization_error(message: str = "Start of structure or map found where not expected.") -> AWSError:
    return AWSError("SerializationException", message)


def unknown_operation(operation: str = "") -> AWSError:
    return AWSError("UnknownOperationException", "")


def internal_failure() -> AWSError:
    return AWSError("InternalFailure", "The request processing has failed because of an unknown error.", 500)
