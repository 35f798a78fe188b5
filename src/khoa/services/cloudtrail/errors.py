"""CloudTrail's errors for LookupEvents, with AWS's codes and messages."""

from __future__ import annotations

from khoa.protocol.errors import AWSError


def invalid_lookup_attributes(message: str) -> AWSError:
    return AWSError("InvalidLookupAttributesException", message)


def invalid_time_range() -> AWSError:
    return AWSError("InvalidTimeRangeException", "Start time must not be after end time.")


def invalid_next_token() -> AWSError:
    return AWSError("InvalidNextTokenException", "Invalid NextToken.")
