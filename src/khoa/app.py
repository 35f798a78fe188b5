"""The ASGI application uvicorn runs (``khoa.app:create_app``): routes each request to the AWS pipeline,
the change stream or Khoa's own endpoints. The parts live in :mod:`khoa.server`."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from khoa import affinity
from khoa.ids import IdSource
from khoa.network import NetworkMap
from khoa.observe.metrics import Metrics
from khoa.runtime import Runtime
from khoa.server.admin import ADMIN_BODY_LIMIT, AdminRoutes, is_admin
from khoa.server.asgi import (
    BodyDeadlines,
    BodyRefused,
    ClientGone,
    Receive,
    Response,
    Scope,
    Send,
    send_response,
)
from khoa.server.authentication import Authenticator
from khoa.server.encoding import error_response
from khoa.server.lifespan import lifespan
from khoa.server.pipeline import Pipeline
from khoa.server.recording import CallRecorder
from khoa.server.sealgate import SealGate
from khoa.server.subscriptions import ChangeStreamEndpoint, SubscriptionLimits
from khoa.settings import Settings
from khoa.webconsole.app import BODY_LIMIT as CONSOLE_BODY_LIMIT
from khoa.webconsole.app import WebConsole, is_browser_visit
from khoa.webconsole.cookies import PREFIX as CONSOLE

CHANGE_STREAM = "/_khoa/events"
# Threads a worker runs calls on (reads that wait on the database, writes on a network database): no
# more than the connection pool holds (khoa.storage.database), so none waits for a connection.
REQUEST_THREADS = 8
# Threads for CPU-heavy calls (khoa.server.pipeline): a few, as each holds a CPU while it works.
HEAVY_THREADS = 4


class KhoaApp:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.metrics = Metrics(runtime.engine, runtime.clock.now, trail=runtime.audit.trail)
        runtime.kms.xks.listeners.append(self.metrics.xks_call)
        ids = IdSource()
        self.ids = ids
        authenticator = Authenticator(
            verifier=runtime.verifier,
            credentials=runtime.credentials,
            clock=runtime.clock,
            metrics=self.metrics,
            check_revocations=runtime.check_revocations,
            dev_account=runtime.dev_account_id if settings.dev else None,
            default_region=settings.default_region,
        )
        recorder = CallRecorder(
            runtime.audit,
            ids,
            runtime.clock,
            self.metrics,
            default_account=runtime.dev_account_id,
            default_region=settings.default_region,
        )
        request_threads = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="khoa-request")
        # SQLite takes one writer at a time: a worker's writes run one after another on a thread of
        # their own, as they once did on the loop. Eight at once only took turns at the GIL and the
        # file (PutSecretValue cost 40% more CPU); a network database serves writes side by side.
        write_threads = (
            ThreadPoolExecutor(1, thread_name_prefix="khoa-write")
            if settings.effective_database_url.startswith("sqlite")
            else request_threads
        )
        self.pipeline = Pipeline(
            services=runtime.services,
            query_services=runtime.query_services,
            authenticator=authenticator,
            recorder=recorder,
            metrics=self.metrics,
            ids=ids,
            network=NetworkMap(settings.private_networks, settings.trusted_proxies),
            clock=runtime.clock,
            revoked=runtime.revoked,
            request_threads=request_threads,
            write_threads=write_threads,
            # The CPUs read before lifespan pins the worker to one (khoa.affinity): heavy work uses them all.
            heavy_threads=ThreadPoolExecutor(
                HEAVY_THREADS,
                thread_name_prefix="khoa-heavy",
                initializer=affinity.keep_thread_to,
                initargs=(affinity.allowed_cpus(),),
            ),
            statements=runtime.statements,
            stuck_after_seconds=runtime.stuck_after_seconds,
        )
        self.change_stream = ChangeStreamEndpoint(
            service=runtime.services["secretsmanager"],
            authorize=runtime.subscription_check,
            authenticator=authenticator,
            network=self.pipeline.network,
            recorder=recorder,
            ids=ids,
            engine=runtime.engine,
            now=runtime.clock.now,
            recheck_seconds=settings.stream_recheck_seconds,
            revocation_epoch=runtime.revocations.current,
            limits=SubscriptionLimits.from_settings(settings),
            statements=runtime.statements,
            stuck_after_seconds=runtime.stuck_after_seconds,
        )
        self.admin = AdminRoutes(runtime, self.metrics)
        self.console = WebConsole(runtime, self.pipeline.handle, self.pipeline.network)
        self.body_deadlines = BodyDeadlines(settings.body_timeout_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(self.runtime, receive, send, on_shutdown=self.close)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == CHANGE_STREAM and scope["method"] == "GET":
            await self.change_stream(scope, receive, send)
            return
        if path == "/" and is_browser_visit(scope):
            await send_response(send, Response(302, b"", headers=[(b"location", CONSOLE.encode() + b"/")]))
            return
        admin = is_admin(path)
        console = path == CONSOLE or path.startswith(CONSOLE + "/")
        settings = self.runtime.settings
        limit = ADMIN_BODY_LIMIT if admin else CONSOLE_BODY_LIMIT if console else settings.max_body_bytes
        try:
            body = await self.body_deadlines.read(receive, limit, scope)
        except ClientGone:
            return  # nobody to answer; a half-received request is never acted on
        except BodyRefused as refused:
            request_id = self.ids.request_id()
            # In the protocol of the service addressed: XML for the query services (IAM, STS).
            response = error_response(self.pipeline.addressed(scope), refused.error, request_id)
            response.headers.append((b"x-amzn-requestid", request_id.encode()))
            # The rest of the body was not read: this connection cannot carry another request.
            response.headers.append((b"connection", b"close"))
            self.metrics.count_request("unknown", "unknown", refused.error.code)
        else:
            if admin:
                response = await self.admin.answer(scope, path, body)
            elif console:
                response = await self.console.answer(scope, body)
            else:
                response = await self.pipeline.handle(scope, body)
        await send_response(send, response)

    def close(self) -> None:
        """Stop the app's own threads (the probe's and the scrape's) before the runtime closes."""
        self.admin.close()


def create_app(settings: Settings | None = None) -> KhoaApp:
    """Build the app; with no settings, read them from the environment (how workers start). Every
    serving process starts here (uvicorn's and granian's workers call it), so it also sets the
    process's GIL switch interval (KHOA_GIL_SWITCH_INTERVAL_MS, khoa.affinity)."""
    if not logging.getLogger().handlers:
        # A worker spawned by `khoa server --workers N`: only the parent configured logging (cli/main.py),
        # so without this the worker's INFO lines (CPU placement, leadership) would be dropped.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings or Settings.from_env()
    affinity.set_switch_interval(settings.gil_switch_interval_ms)
    if settings.seal_backend == "shamir":
        # Starts sealed: the runtime is built once shares reconstruct the root key (khoa.server.sealgate).
        return SealGate(settings, KhoaApp)  # type: ignore[return-value]
    return KhoaApp(Runtime.build(settings))
