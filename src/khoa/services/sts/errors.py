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
