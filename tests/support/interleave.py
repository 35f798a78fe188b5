"""Chosen interleavings of two writers, without threads or timing: run one operation inside another,
just before the other's first write statement.

A read-then-write that is not serialised (its reads outside the lock its writes take) is broken by
exactly this interleaving: the inner operation commits between the outer one's reads and its writes,
and the outer one then writes from what it read before. A writer that takes its lock with its first
statement is not: the inner operation runs before it, wholly, and the outer one reads what it left.
Nothing is held by the outer operation when the inner one runs, so either way nothing waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine, event

_WRITES = ("INSERT", "UPDATE", "DELETE")


@contextlib.contextmanager
def before_first_write(engine: Engine, inner: Callable[[], Any]) -> Iterator[list[Any]]:
    """While the block runs, the first write statement sent through ``engine`` first runs ``inner``
    (once; its own statements run as usual). Yields a list that holds ``inner``'s result once it ran,
    or the AWS error (any exception) it raised."""
    outcome: list[Any] = []
    armed = [True]

    def hook(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if armed[0] and statement.lstrip().upper().startswith(_WRITES):
            armed[0] = False
            try:
                outcome.append(inner())
            except Exception as error:  # noqa: BLE001 - the test asserts on it
                outcome.append(error)

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield outcome
    finally:
        event.remove(engine, "before_cursor_execute", hook)
