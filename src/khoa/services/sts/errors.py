"""STS's errors, with AWS's codes and messages (awsQuery: ``Sender`` faults, HTTP 400 unless noted)."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def validation(message: str) -> AWSError:
    return AWSError("ValidationError", message)


def invalid_parameter_value(message: str) -> AWSError:
    return AWSError("InvalidParameterValue", message)


def malformed_policy(message: str) -> AWSError:
    return AWSError("MalformedPolicyDocument", message)


def access_denied(message: str) -> AWSError:
    return AWSError("AccessDenied", message, 403)


def root_may_not_assume_roles() -> AWSError:
    return access_denied("Roles may not be assumed by root accounts.")


def not_authorized(principal_arn: str, action: str, resource: str) -> AWSError:
    return access_denied(
        f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
    )


def policy_not_attachable(arn: str) -> AWSError:
    return invalid_parameter_value(f"Policy {arn} does not exist or is not attachable.")


# Role chaining (chain.py). The texts are AWS's answers.


def source_identity_already_set() -> AWSError:
    return validation("The source identity is already set for this assume role session")


def transitive_tag_conflict() -> AWSError:
    return invalid_parameter_value(
        "One of the specified transitive tag keys can't be set because it conflicts with a transitive "
        "tag key from the calling session."
    )


def transitive_key_not_passed() -> AWSError:
    return invalid_parameter_value("The specified transitive tag key must be included in the requested tags.")


def duplicate_tag_keys() -> AWSError:
    return invalid_parameter_value(
        "Duplicate tag keys found. Please note that Tag keys are case insensitive."
    )
