"""Request-body deadlines: one sweep timer per process instead of a timer per request."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from khoa.server.asgi import BodyDeadlines, BodyRefused, ClientGone


def feeder(*messages: dict[str, Any], then_wait: bool = False) -> Any:
    queue = list(messages)

    async def receive() -> MutableMapping[str, Any]:
        if queue:
            await asyncio.sleep(0)
            return queue.pop(0)
        if then_wait:
            await asyncio.sleep(3600)
        raise AssertionError("read past the end")

    return receive


def test_a_body_in_pieces_is_joined() -> None:
    deadlines = BodyDeadlines(5.0)
    receive = feeder(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    assert asyncio.run(deadlines.read(receive, 10)) == b"abcd"


def test_too_large_and_gone() -> None:
    deadlines = BodyDeadlines(5.0)
    with pytest.raises(BodyRefused) as refused:
        asyncio.run(deadlines.read(feeder({"type": "http.request", "body": b"x" * 11}), 10))
    assert refused.value.error.status == 413
    with pytest.raises(ClientGone):
        asyncio.run(deadlines.read(feeder({"type": "http.disconnect"}), 10))


def test_a_body_that_never_completes_is_refused_at_its_deadline() -> None:
    deadlines = BodyDeadlines(0.4)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        receive = feeder({"type": "http.request", "body": b"a", "more_body": True}, then_wait=True)
        with pytest.raises(BodyRefused) as refused:
            await deadlines.read(receive, 10)
        assert refused.value.error.status == 408
        # The task was not left cancelled: it goes on to answer 408.
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)
        return loop.time() - started

    took = asyncio.run(scenario())
    assert 0.4 <= took < 2.0


def test_a_body_announced_too_large_and_never_sent_is_413_at_its_deadline() -> None:
    deadlines = BodyDeadlines(0.2)
    receive = feeder({"type": "http.request", "body": b"", "more_body": True}, then_wait=True)
    with pytest.raises(BodyRefused) as refused:
        asyncio.run(deadlines.read(receive, 10, {"headers": [(b"content-length", b"11")]}))
    assert refused.value.error.status == 413
    with pytest.raises(BodyRefused) as refused:  # within the limit: the body is only late
        asyncio.run(deadlines.read(feeder(then_wait=True), 10, {"headers": [(b"content-length", b"10")]}))
    assert refused.value.error.status == 408


def test_many_reads_share_one_sweep_and_someone_elses_cancel_is_not_a_timeout() -> None:
    deadlines = BodyDeadlines(30.0)

    async def scenario() -> None:
        waiting = feeder(then_wait=True)
        task = asyncio.get_running_loop().create_task(deadlines.read(waiting, 10))
        fast = [deadlines.read(feeder({"type": "http.request", "body": b"ok"}), 10) for _ in range(50)]
        assert await asyncio.gather(*fast) == [b"ok"] * 50
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_deadline_holds_on_a_later_event_loop_too() -> None:
    """One object may serve several loops in turn (each test here runs its own): the sweep follows."""
    deadlines = BodyDeadlines(0.3)
    assert asyncio.run(deadlines.read(feeder({"type": "http.request", "body": b"x"}), 10)) == b"x"

    async def stalled() -> None:
        receive = feeder({"type": "http.request", "body": b"a", "more_body": True}, then_wait=True)
        with pytest.raises(BodyRefused):
            await asyncio.wait_for(deadlines.read(receive, 10), 5)

    asyncio.run(stalled())
