"""Running one step of a rotation function with the function role's credentials."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config

from khoa import outbound
from khoa.auth.sessions import SessionCredentials
from khoa.outbound import SIGNATURE_HEADER
from khoa.secret_rotation.builtin import DatabaseRotator
from khoa.secret_rotation.functions import RotationFunction

log = logging.getLogger("khoa.rotation")
_T = TypeVar("_T")


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
    # A session of its own (boto3's sessions are not thread-safe), over one loader: a new loader would
    # read and parse botocore's endpoint and service models again, most of a rotation step's CPU.
    session = botocore.session.get_session()
    session.register_component("data_loader", _models())
    return boto3.session.Session(botocore_session=session).client("secretsmanager", **kwargs)


@functools.cache
def _models() -> botocore.loaders.Loader:
    """botocore's models, read once per process and only read after that."""
    return botocore.loaders.create_loader()


class _Loaded:
    """A Python function's module as last loaded, and its file's (mtime, size) then."""

    def __init__(self, module: ModuleType, stamp: tuple[int, int] | None) -> None:
        self.module = module
        self.stamp = stamp


_loaded: dict[str, _Loaded] = {}
_loading = threading.Lock()


def _stamp(module: ModuleType) -> tuple[int, int] | None:
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _reload_from_source(module: ModuleType) -> None:
    """Run the module's current source again in its namespace, as importlib.reload does, but compiled
    from the file itself: a cached .pyc is trusted on (whole-second mtime, size), so an edit within the
    same second that keeps the size would otherwise be missed."""
    path = module.__file__
    assert path is not None
    code = compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 - the operator's registered rotation module


def _python_module(module_name: str) -> ModuleType:
    """The function's module, imported on first use and re-run whenever its file changed (modification
    time or size), so a fixed rotation function is used by the next attempt without a restart. Only that
    module is reloaded, not the modules it imports."""
    with _loading:
        known = _loaded.get(module_name)
        if known is None:
            if module_name not in sys.modules:
                importlib.invalidate_caches()  # a module file written since the server started
            module = importlib.import_module(module_name)
            _loaded[module_name] = _Loaded(module, _stamp(module))
            return module
        stamp = _stamp(known.module)
        if stamp is not None and stamp != known.stamp:
            _reload_from_source(known.module)  # a failure leaves the old stamp: retried next time
            known.stamp = stamp
            log.info("reloaded rotation function module %s (its file changed)", module_name)
        return known.module


def _python_callable(target: str) -> Callable[[dict[str, Any], Any], Any]:
    module_name, _, attribute = target.partition(":")
    module = _python_module(module_name)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InvocationError(f"{target} is not a callable")
    return function


# -- reporting a failure without a secret value ----------------------------------------------------

REDACTED = "[redacted]"
# Values shorter than this are redacted only as whole words (a 2-character value would otherwise
# garble every message it happens to occur in).
_SHORT = 4
_VALUE_MEMBERS = ("SecretString", "SecretBinary", "RandomPassword")
# The fields of AWS's database secrets that say where to connect, not how to prove who you are: a
# failure naming the host or user it could not reach stays useful. Every other field is redacted.
_CONNECTION_FIELDS = frozenset({"engine", "host", "port", "username", "dbname", "masterarn"})


class _SecretValues:
    """Every secret value a function's client sent or received during one step (boto3 event hooks),
    and the string fields of JSON secrets: what a failure's message must not repeat."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.blind = False  # True: no client was watched, so a message could hold any value

    def _add(self, value: Any) -> None:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in _CONNECTION_FIELDS:
                    self._add(item)
            return
        if isinstance(value, list):
            for item in value:
                self._add(item)
            return
        if not isinstance(value, str) or not value:
            return
        self.values.add(value)
        try:
            parsed = json.loads(value)
        except ValueError:
            return
        if isinstance(parsed, dict | list):
            self._add(parsed)
        elif isinstance(parsed, str | int | float) and not isinstance(parsed, bool):
            self.values.add(str(parsed))

    def _members(self, shape: Any) -> None:
        if isinstance(shape, dict):
            for name, value in shape.items():
                if name in _VALUE_MEMBERS:
                    self._add(value)
                elif isinstance(value, dict | list):
                    self._members(value)
        elif isinstance(shape, list):
            for item in shape:
                self._members(item)

    def on_params(self, params: Any = None, **_: Any) -> None:
        self._members(params)

    def on_response(self, parsed: Any = None, **_: Any) -> None:
        self._members(parsed)

    def redact(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            for form in {value, repr(value)[1:-1], json.dumps(value)[1:-1]}:
                if not form:
                    continue
                if len(form) >= _SHORT:
                    text = text.replace(form, REDACTED)
                else:
                    text = re.sub(rf"(?<!\w){re.escape(form)}(?!\w)", REDACTED, text)
        return text


@contextmanager
def _watching(client: Any) -> Iterator[_SecretValues]:
    """Collect the secret values ``client`` sends and receives while the block runs."""
    seen = _SecretValues()
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        seen.blind = True  # nothing to redact against: failure_message withholds the message
        yield seen
        return
    hooks = (
        ("provide-client-params.secretsmanager", seen.on_params, f"khoa-redact-params-{id(seen)}"),
        ("after-call.secretsmanager", seen.on_response, f"khoa-redact-response-{id(seen)}"),
    )
    for name, handler, unique in hooks:
        events.register(name, handler, unique_id=unique)
    try:
        yield seen
    finally:
        for name, _handler, unique in hooks:
            events.unregister(name, unique_id=unique)


def failure_message(step: str, exc: BaseException, values: _SecretValues) -> str:
    """``<step> failed: <ExceptionType>: <message>`` on one line, with every secret value the step's
    client sent or received replaced by ``[redacted]``."""
    if values.blind:
        return f"{step} failed: {type(exc).__name__} (message withheld: no client to redact it against)"
    message = " ".join(str(exc).split())
    message = values.redact(message)[:300] or "(no message)"
    return f"{step} failed: {type(exc).__name__}: {message}"


def _post(url: str, event: dict[str, Any], key: bytes | None, timeout: float) -> None:
    """One try: the rotation engine retries a failed step itself, minutes apart."""
    result = outbound.post(url, event, timeout=timeout, signing_key=key, signature_header=SIGNATURE_HEADER)
    if result.delivered:
        return
    if result.status is not None:
        raise InvocationError(f"the function answered HTTP {result.status}")
    raise InvocationError(f"the function could not be reached: {result.describe()}")


def invoke(function: RotationFunction, event: dict[str, Any], client: Any, hmac_key: bytes | None) -> None:
    """Run one step; InvocationError (a one-line message with no secret value) if it fails."""
    with _watching(client) as seen:
        try:
            if function.kind == "builtin":
                DatabaseRotator(function.target)(event, client)
            elif function.kind == "python":
                _python_callable(function.target)(event, client)
            else:
                _post(function.target, event, hmac_key, function.timeout_seconds)
        except InvocationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a function may fail in any way: its type and redacted message
            raise InvocationError(failure_message(event["Step"], exc, seen)) from None


def call_redacted(step: str, client: Any, call: Callable[[], _T]) -> _T:
    """Run one of Khoa's own steps with a function's client (after an emergency rotation), failing as a
    function's step does: InvocationError with a one-line message and no secret value."""
    with _watching(client) as seen:
        try:
            return call()
        except InvocationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a database may fail in any way: type and redacted message
            raise InvocationError(failure_message(step, exc, seen)) from None
