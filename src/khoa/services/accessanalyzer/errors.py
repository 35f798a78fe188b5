"""Access Analyzer's errors, with AWS's codes (their HTTP status comes from the model: 400, 403, 404, 409)."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def validation(message: str) -> AWSError:
    return AWSError("ValidationException", message)


def analyzer_not_found(name: str) -> AWSError:
    return AWSError("ResourceNotFoundException", f"Analyzer {name} not found.")


def finding_not_found(finding_id: str) -> AWSError:
    return AWSError("ResourceNotFoundException", f"Finding {finding_id} not found.")


def analyzer_exists(name: str) -> AWSError:
    return AWSError("ConflictException", f"Analyzer {name} already exists.")


def one_per_zone(kind: str) -> AWSError:
    return AWSError(
        "ServiceQuotaExceededException",
        f"You can create only one analyzer of type {kind} per account per Region.",
    )
