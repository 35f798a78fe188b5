"""A worker's start and stop: CPU placement, the job loop, and releasing the database.

The interpreter's switch interval is set earlier, where the process builds the app
(``khoa.app.create_app``, from ``KHOA_GIL_SWITCH_INTERVAL_MS``: khoa.affinity)."""

from __future__ import annotations

from pathlib import Path

from khoa import affinity
from khoa.runtime import Runtime
from khoa.server.asgi import Receive, Send


async def lifespan(runtime: Runtime, receive: Receive, send: Send) -> None:
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
            runtime.jobs.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.jobs.stop()
            runtime.close()
            if pinned is not None:
                pinned.release()
            await send({"type": "lifespan.shutdown.complete"})
            return
