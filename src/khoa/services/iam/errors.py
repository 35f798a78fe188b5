"""IAM's error codes (awsQuery: the code has no ``Exception`` suffix) with AWS's statuses and messages."""

from __future__ import annotations

from khoa.protocol.errors import AWSError

_NOUNS = {"user": "user", "group": "group", "role": "role"}


def no_such_entity(message: str) -> AWSError:
    return AWSError("NoSuchEntity", message, 404)


def entity_not_found(kind: str, name: str) -> AWSError:
    return no_such_entity(f"The {_NOUNS.get(kind, kind)} with name {name} cannot be found.")


def inline_policy_not_found(kind: str, name: str) -> AWSError:
    return no_such_entity(f"The {kind} policy with name {name} cannot be found.")


def policy_not_found(arn: str) -> AWSError:
    return no_such_entity(f"Policy {arn} was not found.")


def policy_not_attachable(arn: str) -> AWSError:
    return no_such_entity(f"Policy {arn} does not exist or is not attachable.")


def policy_version_not_found(arn: str, version_id: str) -> AWSError:
    return no_such_entity(f"Policy {arn} version {version_id} does not exist or is not attachable.")


def access_key_not_found(access_key_id: str) -> AWSError:
    return no_such_entity(f"The Access Key with id {access_key_id} cannot be found.")


def already_exists(message: str) -> AWSError:
    return AWSError("EntityAlreadyExists", message, 409)


def delete_conflict(message: str) -> AWSError:
    return AWSError("DeleteConflict", message, 409)


def limit_exceeded(message: str) -> AWSError:
    return AWSError("LimitExceeded", message, 409)


def quota(name: str, limit: int) -> AWSError:
    return limit_exceeded(f"Cannot exceed quota for {name}: {limit}")


def malformed(message: str) -> AWSError:
    return AWSError("MalformedPolicyDocument", message, 400)


def invalid_input(message: str) -> AWSError:
    return AWSError("InvalidInput", message, 400)


def validation(message: str) -> AWSError:
    return AWSError("ValidationError", message, 400)


def needs_user_name() -> AWSError:
    return validation("Must specify userName when calling with non-User credentials")


def concurrent_modification() -> AWSError:
    return AWSError(
        "ConcurrentModification",
        "The request was rejected because multiple requests to change this object were submitted "
        "simultaneously. Wait a few minutes and submit your request again.",
        409,
    )
