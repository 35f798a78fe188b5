"""The in-process test clock and job trigger, wrapped around ``khoa.app.create_app`` by the test harness.

Integration tests need to move Khoa's domain clock forward (deletion windows, rotation schedules,
session expiry) and to run due background work now. The product has no such hooks outside ``--dev``;
instead, every server a test starts (``tests/support/server.py``) loads this module through
``sitecustomize``, which wraps the ASGI app that ``create_app`` returns in :class:`HarnessApp`:

- ``POST /_test/clock/advance {"seconds": N}`` moves the app's public ``runtime.clock`` forward
  (answers ``{"now": ISO-8601}``);
- ``POST /_test/jobs/run`` runs due background work through ``runtime.jobs.run_due_async()``
  (answers ``{"ran": N}``, 0 when this process is not the jobs leader);
- every response carries ``x-khoa-test-worker: <pid>``, the worker process that answered.

The clock offset is kept in a file (``KHOA_TEST_HARNESS_CLOCK``) shared by all worker processes of one
server, and every worker catches up with it whenever its clock is read (a stat of that file), so
``--workers N`` servers see one clock, as a single-process server does.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADVANCE_PATH = "/_test/clock/advance"
JOBS_PATH = "/_test/jobs/run"
# Every response says which worker process answered, so multi-worker tests can tell workers apart.
WORKER_HEADER = b"x-khoa-test-worker"
_TARGET_MODULE = "khoa.app"


class SharedOffset:
    """The test clock's total offset in seconds, in a file every worker process of one server reads."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._seen: int | None = None  # st_mtime_ns of the last read
        self._value = 0.0

    def read(self) -> float:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return 0.0
        if stat.st_mtime_ns != self._seen:
            with open(self._path, encoding="ascii") as handle:
                text = handle.read().strip()
            self._value = float(text) if text else 0.0
            self._seen = stat.st_mtime_ns
        return self._value

    def add(self, seconds: float) -> float:
        """Add to the offset under an exclusive lock (workers may advance concurrently); returns the total."""
        with open(self._path, "a+", encoding="ascii") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            total = (float(text) if text else 0.0) + seconds
            handle.seek(0)
            handle.truncate()
            handle.write(repr(total))
            handle.flush()
            os.fsync(handle.fileno())
        self._seen = None
        return total


class HarnessApp:
    """ASGI middleware: serves the two test hooks, passes everything else to the Khoa app unchanged."""

    def __init__(self, app: Any, offset: SharedOffset | None) -> None:
        self.app = app
        self.runtime = app.runtime  # the public per-process state (khoa.runtime.Runtime)
        self._offset = offset
        self._pid = str(os.getpid()).encode()
        if offset is not None:
            # Every reading of the clock catches up first: work that no request of this worker triggers
            # (a change stream's re-checks, background jobs) sees another worker's advance too.
            clock = self.runtime.clock
            read = clock.now

            def now() -> datetime:
                self._catch_up()
                result: datetime = read()
                return result

            clock.now = now

    def _catch_up(self) -> None:
        """Bring this process's clock up to the shared offset (the clock only moves forward)."""
        if self._offset is None:
            return
        clock = self.runtime.clock
        behind = self._offset.read() - clock.offset.total_seconds()
        if behind > 0:
            clock.advance(timedelta(seconds=behind))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._catch_up()
        path = scope["path"]
        if path == ADVANCE_PATH and scope["method"] == "POST":
            await _answer(send, *self._advance(await _body(receive)))
            return
        if path == JOBS_PATH and scope["method"] == "POST":
            await _body(receive)
            await _answer(send, 200, {"ran": await self.runtime.jobs.run_due_async()})
            return

        async def send_with_worker(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (WORKER_HEADER, self._pid)]}
            await send(message)

        await self.app(scope, receive, send_with_worker)

    def _advance(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            seconds = float(json.loads(body or b"{}").get("seconds", 0))
        except (ValueError, TypeError, AttributeError):
            return 400, {"error": 'expected {"seconds": N} with N >= 0'}
        if not seconds >= 0:  # also refuses NaN
            return 400, {"error": 'expected {"seconds": N} with N >= 0'}
        if self._offset is None:
            self.runtime.clock.advance(timedelta(seconds=seconds))
        else:
            self._offset.add(seconds)
            self._catch_up()
        return 200, {"now": self.runtime.clock.now().isoformat()}


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wrap_factory(factory: Callable[..., Any]) -> Callable[..., Any]:
    """``create_app`` that returns the app wrapped in :class:`HarnessApp`."""
    if getattr(factory, "__khoa_test_harness__", False):
        return factory

    @functools.wraps(factory)
    def create_app(*args: Any, **kwargs: Any) -> HarnessApp:
        path = os.environ.get("KHOA_TEST_HARNESS_CLOCK", "")
        return HarnessApp(factory(*args, **kwargs), SharedOffset(path) if path else None)

    create_app.__khoa_test_harness__ = True  # type: ignore[attr-defined]
    return create_app


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader for ``khoa.app``, then wraps the module's ``create_app``."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._real.exec_module(module)
        module.create_app = wrap_factory(module.create_app)  # type: ignore[attr-defined]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``khoa.app`` through the other finders and hands back a spec with the patching loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Wrap ``khoa.app.create_app`` in this process (now if already imported, else when it is)."""
    module = sys.modules.get(_TARGET_MODULE)
    if module is not None:
        module.create_app = wrap_factory(module.create_app)  # type: ignore[attr-defined]
        return
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
