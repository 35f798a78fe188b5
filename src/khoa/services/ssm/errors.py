"""Parameter Store's error codes, with the messages AWS Systems Manager returns."""

from __future__ import annotations

from khoa.protocol.errors import AWSError

NAME_RULES = (
    'Parameter name: can\'t be prefixed with "ssm" (case-insensitive). If formed as a path, it can consist '
    "of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the "
    "following 3 symbols .-_"
)

PATH_RULES = (
    "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a "
    'forward slash "/". It can\'t be prefixed with "aws" or "ssm" (case-insensitive). It must use only '
    "letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special "
    'characters are not allowed. All sub-paths, if specified, must use the forward slash symbol "/". '
    "Valid example: /get/parameters2-/by1./path0_."
)


def not_found(message: str = "") -> AWSError:
    return AWSError("ParameterNotFound", message)


def version_not_found(message: str) -> AWSError:
    return AWSError("ParameterVersionNotFound", message)


def already_exists() -> AWSError:
    return AWSError(
        "ParameterAlreadyExists",
        "The parameter already exists. To overwrite this value, set the overwrite option in the "
        "request to true.",
    )


def validation(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def code(name: str, message: str) -> AWSError:
    return AWSError(name, message)


def too_many_tags(limit: int) -> AWSError:
    return AWSError(
        "TooManyTagsError",
        f"The Targets parameter includes too many tags. A resource can have at most {limit} tags.",
    )
