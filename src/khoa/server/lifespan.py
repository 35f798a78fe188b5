"""A worker's start and stop: interpreter tuning, CPU placement, the job loop, and releasing the database."""

from __future__ import annotations

import sys

from khoa import affinity
from khoa.runtime import Runtime
from khoa.server.asgi import Receive, Send

# How long the event loop may keep the GIL while another thread waits for it (CPython's default is
# 5 ms). The audit writer thread needs the GIL back after each SQLite call it makes with the GIL
# released (insert, commit's fsync, the lock file): on a busy server each of those waits the full
# interval for the loop to let go, and every request of the batch waits with it. At 0.5 ms a
# group commit of ~64 events took ~2 ms instead of ~10 ms, and the trail's cost on GetSecretValue
# throughput fell by a third (bench/run.py). With no other thread waiting the setting does nothing.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


async def lifespan(runtime: Runtime, receive: Receive, send: Send) -> None:
    pinned: affinity.Pinned | None = None  # the CPU this worker keeps to
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
            if runtime.settings.cpu_affinity == "auto":
                pinned = affinity.pin_process(runtime.settings.data_dir)
            runtime.jobs.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.jobs.stop()
            runtime.close()
            if pinned is not None:
                pinned.release()
            await send({"type": "lifespan.shutdown.complete"})
            return
