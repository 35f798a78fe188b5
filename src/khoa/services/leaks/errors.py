"""khoa-leaks' errors, in the AWS error shape (JSON ``__type`` and HTTP 400)."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def throttled() -> AWSError:
    return AWSError("ThrottlingException", "Rate exceeded")


def validation(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def duplicate_ids(candidate_id: str) -> AWSError:
    return validation(f"Candidate Id '{candidate_id}' appears more than once; Ids must be unique in a call.")
