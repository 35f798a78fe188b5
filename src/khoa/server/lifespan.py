"""A worker's start and stop: CPU placement, the garbage collector, the job loop, and releasing the
database.

The interpreter's switch interval is set earlier, where the process builds the app
(``khoa.app.create_app``, from ``KHOA_GIL_SWITCH_INTERVAL_MS``: khoa.affinity)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from khoa import affinity
from khoa.runtime import Runtime
from khoa.server.asgi import Receive, Send


async def lifespan(
    runtime: Runtime, receive: Receive, send: Send, on_shutdown: Callable[[], None] = lambda: None
) -> None:
    """``on_shutdown``: what the app closes of its own (the probes' threads) before the runtime."""
    pinned: affinity.Pinned | None = None  # the CPU this worker keeps to
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            settings = runtime.settings
            if settings.cpu_affinity == "auto":
                pinned = affinity.pin_process(
                    settings.data_dir,
                    settings.workers,
                    claim_dir=Path(settings.cpu_claim_dir) if settings.cpu_claim_dir else None,
                )
            settle_garbage_collector()
            runtime.jobs.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.jobs.stop()
            on_shutdown()
            runtime.close()
            if pinned is not None:
                pinned.release()
            await send({"type": "lifespan.shutdown.complete"})
            return


# Allocations between young-generation collections (CPython's default is 700): a request allocates a
# few hundred containers, so the default collects every other request, mostly to find nothing.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the tail.

    A worker holds a few hundred thousand long-lived objects once started (service models, SQL
    statements, policies), and a full collection walks every one of them on the event loop: each one
    stalled every request of the worker for tens of milliseconds. Frozen after start-up, they are
    never walked again; collections see only what requests and caches made since.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
