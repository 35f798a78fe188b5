"""AWS Organizations' errors, with AWS's codes and messages (awsJson1_1, HTTP 400)."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def not_in_use() -> AWSError:
    return AWSError(
        "AWSOrganizationsNotInUseException",
        "Your account is not a member of an organization.",
    )


def already_in_organization() -> AWSError:
    return AWSError(
        "AlreadyInOrganizationException", "The AWS account is already a member of an organization."
    )


def access_denied() -> AWSError:
    return AWSError("AccessDeniedException", "You don't have permissions to access this resource.")


def invalid_input(
    message: str = "You provided a value that does not match the required pattern.",
) -> AWSError:
    return AWSError("InvalidInputException", message)


def policy_not_found() -> AWSError:
    return AWSError("PolicyNotFoundException", "We can't find a policy with the PolicyId that you specified.")


def target_not_found() -> AWSError:
    return AWSError(
        "TargetNotFoundException",
        "We can't find a root, OU, account, or policy with the TargetId that you specified.",
    )


def root_not_found() -> AWSError:
    return AWSError("RootNotFoundException", "We can't find a root with the RootId that you specified.")


def duplicate_policy() -> AWSError:
    return AWSError("DuplicatePolicyException", "A policy with the same name already exists.")


def duplicate_attachment() -> AWSError:
    return AWSError(
        "DuplicatePolicyAttachmentException",
        "The selected policy is already attached to the specified target.",
    )


def policy_not_attached() -> AWSError:
    return AWSError(
        "PolicyNotAttachedException",
        "The policy isn't attached to the specified target in the specified root.",
    )


def policy_in_use() -> AWSError:
    return AWSError(
        "PolicyInUseException",
        "The policy is attached to one or more entities. You must detach it from all roots, OUs, and "
        "accounts before performing this operation.",
    )


def policy_type_not_enabled() -> AWSError:
    return AWSError(
        "PolicyTypeNotEnabledException", "This operation can be performed only for enabled policy types."
    )


def policy_type_already_enabled() -> AWSError:
    return AWSError("PolicyTypeAlreadyEnabledException", "The specified policy type is already enabled.")


def policy_type_not_available() -> AWSError:
    return AWSError(
        "PolicyTypeNotAvailableForOrganizationException",
        "You can't use the specified policy type with the feature set currently enabled for this "
        "organization.",
    )


def malformed_policy(detail: str) -> AWSError:
    return AWSError(
        "MalformedPolicyDocumentException",
        f"The provided policy document does not meet the requirements of the specified policy type. {detail}",
    )


def constraint_violation(message: str) -> AWSError:
    return AWSError("ConstraintViolationException", message)


def invalid_next_token() -> AWSError:
    return invalid_input("The NextToken value isn't valid.")


def account_not_found() -> AWSError:
    return AWSError("AccountNotFoundException", "You specified an account that doesn't exist.")
