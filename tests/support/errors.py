"""What a refused call answered: the error helpers every test file shares.

Two families: calls through a boto3 client fail with ``botocore``'s ``ClientError`` (integration and
interop tests), handlers called in-process raise Khoa's own ``AWSError`` (unit tests). Each helper
names what it hands back, so a test reads as the assertion it makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.protocol.errors import AWSError


def error_response(call: Callable[..., Any], /, **kwargs: Any) -> dict[str, Any]:
    """The whole parsed response (``Error``, ``ResponseMetadata``, ...) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response: dict[str, Any] = caught.value.response
    return response


def error_code(call: Callable[..., Any], /, **kwargs: Any) -> str:
    """The error code of a call that must fail."""
    return str(error_response(call, **kwargs)["Error"]["Code"])


def refused(call: Callable[..., Any], /, **kwargs: Any) -> tuple[str, str]:
    """(code, message) of a call that must fail."""
    error = error_response(call, **kwargs)["Error"]
    return error["Code"], error.get("Message", "")


def expect_error(code: str, call: Callable[..., Any], /, **kwargs: Any) -> dict[str, Any]:
    """Call, expect an AWS error with exactly this code and HTTP 400, and return its Error member."""
    response = error_response(call, **kwargs)
    assert response["Error"]["Code"] == code, response["Error"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    error: dict[str, Any] = response["Error"]
    return error


def code_of(call: Callable[..., Any], /, **kwargs: Any) -> str:
    """ "ok" when the call succeeds, else its error code (for tests where either may be right)."""
    try:
        call(**kwargs)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


def caught_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    """The error code of a ClientError already caught with ``pytest.raises``."""
    return str(excinfo.value.response["Error"]["Code"])


def failure(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a ClientError already caught with ``pytest.raises``."""
    response = excinfo.value.response
    return (
        response["Error"]["Code"],
        response["Error"].get("Message", ""),
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def raised_code(call: Callable[..., Any], /, *args: Any) -> str:
    """The code of the AWSError an in-process call must raise (unit tests, no server)."""
    with pytest.raises(AWSError) as caught:
        call(*args)
    return caught.value.code


def unavailable_within(bound: float, call: Callable[[], Any]) -> float:
    """Run ``call``: it must be refused with the AWS-shaped 503 (``ServiceUnavailableException``)
    within ``bound`` seconds, as a call on a database that does not answer is. Returns how long."""
    started = time.monotonic()
    response = error_response(call)
    took = time.monotonic() - started
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 503, response
    assert response["Error"]["Code"] == "ServiceUnavailableException", response
    assert took <= bound, f"{took:.1f} s > {bound} s"
    return took
