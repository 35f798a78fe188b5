"""khoa.server.connections: which heads are overdue, and which are too large (each arriving in one
read here). The deadlines and limits themselves, against a real server, are in
tests/integration/test_transport_security.py."""

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


# The documented bounds (README): a request-target of 16 KiB, a head of 64 KiB.
TARGET_LIMIT = 16 * 1024
HEAD_LIMIT = 64 * 1024


def test_a_request_target_too_long_for_the_url_parser_is_refused_414(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    """httptools.parse_url keeps offsets in 16 bits: this path was seen as 4,465 bytes and the query read
    from inside it. Refused before it is parsed, whole in one read, and no application started."""
    protocol, transport = connection
    protocol.data_received(
        b"GET /" + b"A" * 70_000 + b"?Action=GetCallerIdentity HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert transport.written.startswith(b"HTTP/1.1 414 ") and transport.closed
    assert transport.written.count(b"HTTP/1.1") == 1  # not uvicorn's 400 as well
    assert protocol.cycle is None


def _another(protocol: HeadDeadlineProtocol) -> tuple[HeadDeadlineProtocol, Transport]:
    """A second connection, on the same loop and configuration as the fixture's."""
    other = HeadDeadlineProtocol(
        config=protocol.config,
        server_state=ServerState(),
        app_state={},
        _loop=protocol.loop,
        head_seconds=10.0,
    )
    transport = Transport()
    other.connection_made(transport)
    return other, transport


def test_the_request_target_bound_is_16_kib(connection: tuple[HeadDeadlineProtocol, Any]) -> None:
    protocol, transport = connection
    within = b"/?" + b"a" * (TARGET_LIMIT - 2)
    protocol.data_received(b"GET " + within + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written == b"" and not transport.closed
    assert protocol.cycle is not None and protocol.scope["query_string"] == within[2:]
    over, over_transport = _another(protocol)
    over.data_received(b"GET " + within + b"a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert over_transport.written.startswith(b"HTTP/1.1 414 ") and over.cycle is None


def test_a_head_over_the_limit_is_refused_431_though_it_arrives_in_one_read(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    protocol, transport = connection
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 1000) for n in range(60))  # ~61 KiB: served
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert protocol.cycle is not None and not transport.closed
    over, over_transport = _another(protocol)
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 1000) for n in range(HEAD_LIMIT // 1000 + 1))
    over.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert over_transport.written.startswith(b"HTTP/1.1 431 ") and over_transport.closed
    assert over_transport.written.count(b"HTTP/1.1") == 1  # not uvicorn's 400 as well
    assert over.cycle is None


def test_headers_reach_the_application_as_uvicorn_gives_them(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    """The protocol handles each header itself (without calling uvicorn's on_header, which it
    replaces): names lower-cased, values as sent, repeated names kept in order, and an
    ``Expect: 100-continue`` noted so that uvicorn answers it before the body is read."""
    protocol, transport = connection
    protocol.data_received(
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Svc.Op\r\nX-Twice: a\r\nx-twice: B\r\n"
        b"Expect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert protocol.cycle is not None
    assert protocol.cycle.scope["headers"] == [
        (b"host", b"x"),
        (b"x-amz-target", b"Svc.Op"),
        (b"x-twice", b"a"),
        (b"x-twice", b"B"),
        (b"expect", b"100-Continue"),
        (b"content-length", b"2"),
    ]
    assert protocol.expect_100_continue and not transport.closed


def test_a_response_head_leaves_with_its_body_in_one_write(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    """A response's head (uvicorn's write for http.response.start) is held until the next write,
    which sends both as one, at once; a head with nothing after it in the pass leaves at the end of
    the pass; anything else is written at once, and a close sends what is held first."""
    protocol, transport = connection
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol.cycle is not None
    response = protocol.cycle.transport
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    response.write(head)
    assert writes == []
    response.write(b"ok")
    assert writes == [head + b"ok"]  # whole, without waiting for the pass to end

    response.write(b"streamed")
    assert writes[-1] == b"streamed"
    response.write(head)  # a head with no body yet (a stream that has nothing to send)
    protocol.loop.run_until_complete(asyncio.sleep(0))
    assert writes[-1] == head

    response.write(head)
    response.close()
    assert writes[-1] == head and transport.closed
    sent = len(writes)
    protocol.loop.run_until_complete(asyncio.sleep(0))
    assert len(writes) == sent  # (sent once)


def test_a_refusal_never_overtakes_an_answer_still_held(
    connection: tuple[HeadDeadlineProtocol, Any],
) -> None:
    """An answer written in this pass and a refusal of the next head (a pipelined request too
    large) leave in the order they were written, the answer whole, before the connection closes."""
    protocol, transport = connection
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol.cycle is not None
    protocol.cycle.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    protocol.refuse_head(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
    assert b"".join(writes) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"
    )
    assert transport.closed
