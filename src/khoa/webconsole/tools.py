"""What the console's pages may use besides the API: the session store, the settings, the node's own
state (health, seal, leadership) and a way to call the API with credentials not yet signed in (to
check them at sign-in)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import botocore.session

from khoa.observe.health import readiness
from khoa.runtime import Runtime
from khoa.settings import Settings
from khoa.webconsole.api import ConsoleApi, Handle, Origin
from khoa.webconsole.sessions import ConsoleSessions, SessionCredentials
from khoa.webconsole.throttle import FailedSignIns


@dataclass
class Tools:
    runtime: Runtime
    sessions: ConsoleSessions
    core: botocore.session.Session
    handle: Handle
    loop: asyncio.AbstractEventLoop
    origin: Origin
    secure: bool  # the browser's connection is TLS (cookies get Secure)
    client_address: str  # the browser's address (through trusted proxies), as the trail records it
    failed_sign_ins: FailedSignIns

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def now(self) -> float:
        """The domain clock (as STS sessions use), in epoch seconds."""
        return self.runtime.clock.now().timestamp()

    def api_for(self, credentials: SessionCredentials, region: str) -> ConsoleApi:
        return ConsoleApi(self.core, self.handle, self.loop, self.origin, credentials, region)

    def node_status(self, identity: dict[str, Any]) -> dict[str, Any]:
        """This node's readiness report (database, audit trail) and leadership, as ``/_khoa/ready``
        tells anyone; for the installation's operator (its first account's root, ``identity`` being the
        signed-in caller's) also how it is built: seal backend, database kind and mode, which a
        tenant has no business knowing."""
        _, report = readiness(self.runtime.engine, self.runtime.audit)
        report["leader"] = self.runtime.jobs.is_leader
        if identity.get("Arn") == f"arn:aws:iam::{self.runtime.dev_account_id}:root":
            settings = self.runtime.settings
            report["seal_backend"] = settings.seal_backend
            report["dev"] = settings.dev
            report["database_kind"] = settings.effective_database_url.split(":", 1)[0].split("+", 1)[0]
        return report
