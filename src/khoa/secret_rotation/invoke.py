"""Running one step of a rotation function with the function role's credentials."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from khoa import outbound
from khoa.auth.sessions import SessionCredentials
from khoa.outbound import SIGNATURE_HEADER
from khoa.secret_rotation.builtin import DatabaseRotator
from khoa.secret_rotation.functions import RotationFunction


class InvocationError(Exception):
    """The function failed; carries a message safe to log (never a secret)."""


def khoa_client(endpoint: str, region: str, credentials: SessionCredentials | None) -> Any:
    """A Secrets Manager client that calls this Khoa server as the function's role."""
    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": region,
        "config": Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60),
    }
    if credentials is not None:
        kwargs.update(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
    else:
        kwargs.update(aws_access_key_id="khoa-dev", aws_secret_access_key="khoa-dev")
    if endpoint.startswith("https://127.0.0.1:"):
        # Calling this very server over loopback: its certificate names the public host, not 127.0.0.1,
        # and the bytes never leave the machine, so the hostname check is skipped for this call only.
        kwargs["verify"] = False
    return boto3.session.Session().client("secretsmanager", **kwargs)


def _python_callable(target: str) -> Callable[[dict[str, Any], Any], Any]:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InvocationError(f"{target} is not a callable")
    return function


def _post(url: str, event: dict[str, Any], key: bytes | None, timeout: float) -> None:
    """One try: the rotation engine retries a failed step itself, minutes apart."""
    result = outbound.post(url, event, timeout=timeout, signing_key=key, signature_header=SIGNATURE_HEADER)
    if result.delivered:
        return
    if result.status is not None:
        raise InvocationError(f"the function answered HTTP {result.status}")
    raise InvocationError(f"the function could not be reached: {result.describe()}")


def invoke(function: RotationFunction, event: dict[str, Any], client: Any, hmac_key: bytes | None) -> None:
    try:
        if function.kind == "builtin":
            DatabaseRotator(function.target)(event, client)
        elif function.kind == "python":
            _python_callable(function.target)(event, client)
        else:
            _post(function.target, event, hmac_key, function.timeout_seconds)
    except InvocationError:
        raise
    except Exception as exc:  # noqa: BLE001 - a function may fail in any way; report its type only
        message = str(exc) if function.kind == "builtin" else type(exc).__name__
        raise InvocationError(f"{event['Step']} failed: {type(exc).__name__}: {message[:300]}") from None
