"""khoa.server.connections: which heads are overdue. The deadlines themselves, against a real server,
are in tests/integration/test_transport_security.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from khoa.server.connections import HeadDeadlineProtocol


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _never_answers(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()


@pytest.fixture
def connection() -> Iterator[tuple[HeadDeadlineProtocol, Transport]]:
    loop = asyncio.new_event_loop()
    config = Config(app=_never_answers, lifespan="off", log_level="warning")
    config.load()
    protocol = HeadDeadlineProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=loop, head_seconds=10.0
    )
    transport = Transport()
    protocol.connection_made(transport)
    yield protocol, transport
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def test_a_silent_connection_is_overdue_after_the_bound(connection: tuple[HeadDeadlineProtocol, Any]) -> None:
    protocol, transport = connection
    opened = protocol.head_since
    assert opened is not None
    assert not protocol.head_overdue(opened + 9.9)
    assert protocol.head_overdue(opened + 10.1)
    protocol.close_overdue()
    assert transport.closed and transport.written == b""  # nothing began: nothing to answer


def test_a_begun_head_is_answered_408(connection: tuple[HeadDeadlineProtocol, Any]) -> None:
    protocol, transport = connection
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert protocol.head_overdue(protocol.loop.time() + 10.1)
    protocol.close_overdue()
    assert transport.written.startswith(b"HTTP/1.1 408 ") and transport.closed


def test_a_head_waiting_behind_a_request_being_served_is_not_the_clients_delay(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    """Pipelined: the second head arrives while the first request is served; uvicorn reads no more
    until that one is answered, so its wait does not count against the second head."""
    protocol, transport = connection
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
    assert protocol.head_since is not None and protocol.cycle is not None
    assert not protocol.head_overdue(protocol.loop.time() + 60)  # the first is still being served
    protocol.cycle.response_complete = True
    protocol.on_response_complete()  # the second head's time starts now
    assert not protocol.head_overdue(protocol.loop.time() + 9.9)
    assert protocol.head_overdue(protocol.loop.time() + 10.1)
    assert not transport.closed


def test_a_complete_head_is_never_overdue(connection: tuple[HeadDeadlineProtocol, Any]) -> None:
    protocol, _ = connection
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol.head_since is None
    assert not protocol.head_overdue(protocol.loop.time() + 3600)
