"""The web console under ``/console/``: routing, the session cookie, CSRF, the security headers every
answer carries, and turning what a page returns into HTTP.

Every page runs on a console thread and reads and changes Khoa only through the API, as the signed-in
principal (khoa.webconsole.api): authorisation and the trail are the API's. What this module adds is
what a browser needs to be safe with a secrets service:

- the session is a random token in an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` over TLS),
  scoped to ``/console``; the database keeps only its digest (khoa.webconsole.sessions);
- every POST carries a CSRF token derived from the session (before sign-in: from a cookie of its
  own) and, when the browser says where the form came from (``Origin``), that must be this server;
- a strict Content-Security-Policy (scripts and styles only from /console/static, no inline code,
  no framing), ``Cache-Control: no-store`` (a revealed value never lands in a cache or the back
  button's copy), no referrer;
- values never travel in URLs: actions are POSTed forms, and a notice left for the next page travels
  in a short-lived cookie, not the query string.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from khoa.blocking import DatabaseStuck, run_unless_stuck
from khoa.logs import LogLimiter
from khoa.network import NetworkMap
from khoa.runtime import Runtime
from khoa.server.asgi import Response, Scope, header_map
from khoa.storage.database import is_unavailable
from khoa.webconsole import pages
from khoa.webconsole.api import Handle, Origin, new_core_session
from khoa.webconsole.cookies import (
    FLASH_COOKIE,
    PREFIX,
    PRESESSION_COOKIE,
    PRINTABLE_ASCII,
    SESSION_COOKIE,
    cookie,
)
from khoa.webconsole.http import BadRequest, Page, Redirect, Request, Route, parse_form
from khoa.webconsole.render import Templates
from khoa.webconsole.sessions import ConsoleSessions, csrf_matches, csrf_token_for, new_token
from khoa.webconsole.throttle import FailedSignIns
from khoa.webconsole.tools import Tools

log = logging.getLogger("khoa.console")

BODY_LIMIT = 256 * 1024  # a 64 KiB secret, form-encoded, fits
HTML = b"text/html; charset=utf-8"
CONSOLE_THREADS = 4
# The API's answers that mean the session's credentials no longer work: the session ends.
_SIGNED_OUT_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
    }
)
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(css|js|svg)$")
# botocore's validation messages quote the offending value: keep the parameter, drop the value.
_VALUE_IN_MESSAGE = re.compile(r", value: [^\n]*?(?=, valid|, type|\n|$)")


def _security_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", _CSP.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),  # no-referrer would make browsers send Origin: null
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if secure:
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers


def _cookies(headers: dict[str, list[str]]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for raw in headers.get("cookie", []):
        try:
            jar.load(raw)
        except CookieError:
            continue
    return {name: morsel.value for name, morsel in jar.items()}


def is_browser_visit(scope: Scope) -> bool:
    """A person typing the server's address: GET / with no query, no signature and HTML accepted (an
    API call to / is a signed POST, or a GET with a query such as a presigned STS URL)."""
    if scope["method"] != "GET" or scope.get("query_string"):
        return False
    headers = header_map(scope)
    if "authorization" in headers or "x-amz-target" in headers:
        return False
    return "text/html" in ",".join(headers.get("accept", []))


class WebConsole:
    def __init__(self, runtime: Runtime, handle: Handle, network: NetworkMap) -> None:
        """``handle`` runs one API request through the pipeline (KhoaApp's ``Pipeline.handle``);
        ``network`` says which peers are trusted proxies (whose X-Forwarded-Proto is believed)."""
        self.runtime = runtime
        self.handle = handle
        self.network = network
        self.sessions = ConsoleSessions(runtime.engine, runtime.barrier)
        self.templates = Templates()
        self.core = new_core_session()
        self.threads = ThreadPoolExecutor(CONSOLE_THREADS, thread_name_prefix="khoa-console")
        self.failed_sign_ins = FailedSignIns()
        self._logs = LogLimiter(log)  # an outage fails every page the same way: one line per interval
        self.routes = [(route, route.compiled()) for route in pages.ROUTES]
        static = resources.files("khoa.webconsole") / "static"
        self.static = {
            entry.name: entry.read_bytes() for entry in static.iterdir() if _STATIC_NAME.match(entry.name)
        }

    async def answer(self, scope: Scope, body: bytes) -> Response:
        loop = asyncio.get_running_loop()
        runtime = self.runtime
        try:
            return await run_unless_stuck(
                self.threads, runtime.statements, runtime.stuck_after_seconds, self._answer, scope, body, loop
            )
        except DatabaseStuck as exc:  # the page's thread is held by storage that stopped answering
            tools = self._tools(scope, header_map(scope), loop)
            return self._finish(self._unavailable(exc, tools), tools.secure)

    def _answer(self, scope: Scope, body: bytes, loop: asyncio.AbstractEventLoop) -> Response:
        headers = header_map(scope)
        tools = self._tools(scope, headers, loop)
        try:
            response = self._route(scope, body, headers, tools)
        except Exception as exc:  # noqa: BLE001 - answered as a page, logged without its text
            if is_unavailable(exc):  # the session store's database did not answer in time
                response = self._unavailable(exc, tools)
            else:
                self._logs.exception(
                    f"console:{type(exc).__name__}", "console page %s failed", _area(scope["path"])
                )
                response = self._error(500, "Error", "The console could not show this page.", None, tools)
        return self._finish(response, tools.secure)

    def _tools(self, scope: Scope, headers: dict[str, list[str]], loop: asyncio.AbstractEventLoop) -> Tools:
        forwarded = headers.get("x-forwarded-for")
        return Tools(
            runtime=self.runtime,
            sessions=self.sessions,
            core=self.core,
            handle=self.handle,
            loop=loop,
            origin=Origin(
                client=scope.get("client"),
                scheme=scope.get("scheme", "http"),
                forwarded_for=",".join(forwarded).encode("latin-1") if forwarded else None,
            ),
            secure=self._is_tls(scope, headers),
            client_address=self.network.client_address(
                (scope.get("client") or ("", 0))[0], ",".join(forwarded) if forwarded else None
            ),
            failed_sign_ins=self.failed_sign_ins,
        )

    def _unavailable(self, exc: Exception, tools: Tools) -> Response:
        """The page for a database that did not answer in time (its error's name is logged, never
        its text, which may carry the database's address)."""
        self._logs.warning("console database", "console: database unavailable (%s)", type(exc).__name__)
        response = self._error(503, "Unavailable", "Khoa's database did not answer. Try again.", None, tools)
        response.headers.append((b"retry-after", b"5"))
        return response

    @staticmethod
    def _finish(response: Response, secure: bool) -> Response:
        response.headers.extend(_security_headers(secure))
        if not any(name == b"cache-control" for name, _ in response.headers):
            response.headers.append((b"cache-control", b"no-store"))
        return response

    def _is_tls(self, scope: Scope, headers: dict[str, list[str]]) -> bool:
        """The browser's connection is TLS: ours, or a trusted proxy's that terminated it."""
        if scope.get("scheme") == "https":
            return True
        client = scope.get("client")
        proto = (headers.get("x-forwarded-proto") or [""])[-1].strip().lower()
        return proto == "https" and client is not None and self.network.trusts(client[0])

    def _route(self, scope: Scope, body: bytes, headers: dict[str, list[str]], tools: Tools) -> Response:
        method = scope["method"]
        path: str = scope["path"]
        if path in (PREFIX, PREFIX + "/"):
            path = PREFIX + "/"
        if path.startswith(PREFIX + "/static/") and method in ("GET", "HEAD"):
            return self._static(path.removeprefix(PREFIX + "/static/"))
        route, params, allowed = self._match(method, path)
        if route is None:
            if allowed:
                response = self._error(
                    405, "Method not allowed", "This page does not take that request.", None, tools
                )
                response.headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
                return response
            return self._error(404, "Not found", "There is no such page in the console.", None, tools)
        try:
            query = _query(scope)
        except BadRequest as bad:
            return self._error(400, "Bad request", str(bad), None, tools)
        cookies = _cookies(headers)
        now = tools.now()
        session = None
        if cookies.get(SESSION_COOKIE):
            session = self.sessions.find(cookies[SESSION_COOKIE], now, tools.settings.console_idle_seconds)
        if session is None and not route.public:
            if method == "GET":
                target = PREFIX + "/signin?next=" + quote(path, safe="/")
                return self._redirect(Redirect(target), tools, had_flash=False)
            return self._error(401, "Signed out", "Your session has ended. Sign in again.", None, tools)
        form: dict[str, list[str]] = {}
        if method == "POST":
            refusal = self._check_post(headers, body, cookies, session, tools)
            if isinstance(refusal, Response):
                return refusal
            form = refusal
        request = Request(
            method=method,
            path=path,
            query=query,
            form=form,
            params={name: unquote(value) for name, value in params.items()},
            session=session,
            api=tools.api_for(session.credentials, session.region) if session else None,
            tools=tools,
            user_agent=(headers.get("user-agent") or [""])[0],
            flash=_read_flash(cookies.get(FLASH_COOKIE)),
        )
        presession = None
        if session is None:
            presession = cookies.get(PRESESSION_COOKIE) or new_token()
        request.context.update(
            session=session,
            csrf_token=session.csrf_token if session else csrf_token_for(presession or ""),
            regions=tools.settings.regions,
            dev=tools.settings.dev,
            path=path,
        )
        new_presession = presession if presession and PRESESSION_COOKIE not in cookies else None
        return self._run(route, request, tools, cookies, new_presession)

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], set[str]]:
        allowed: set[str] = set()
        for route, compiled in self.routes:
            match = compiled.match(path)
            if match is None:
                continue
            if route.method == method or (route.method == "GET" and method == "HEAD"):
                return route, match.groupdict(), allowed
            allowed.add(route.method)
        return None, {}, allowed

    def _check_post(
        self,
        headers: dict[str, list[str]],
        body: bytes,
        cookies: dict[str, str],
        session: Any,
        tools: Tools,
    ) -> Response | dict[str, list[str]]:
        """The form of a POST, or the refusal of a forged one (another origin, no or wrong CSRF token)."""
        origin = (headers.get("origin") or [""])[0]
        host = (headers.get("host") or [""])[0]
        # A form from another site (or from an opaque origin such as a sandboxed frame: "null").
        if origin and origin.split("://", 1)[-1] != host:
            return self._error(403, "Refused", "This form was not sent from this console.", None, tools)
        content_type = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return self._error(
                415, "Unsupported form", "The console takes URL-encoded forms only.", None, tools
            )
        try:
            form = parse_form(body)
        except BadRequest as bad:
            return self._error(400, "Bad request", str(bad), None, tools)
        presented = (form.get("csrf_token") or [""])[0]
        key = session.token if session is not None else cookies.get(PRESESSION_COOKIE, "")
        if not key or not presented or not csrf_matches(key, presented):
            return self._error(
                403,
                "Form expired",
                "This form could not be verified (it may be from an earlier session). "
                "Reload the page and try again.",
                None,
                tools,
            )
        return form

    def _run(
        self,
        route: Route,
        request: Request,
        tools: Tools,
        cookies: dict[str, str],
        new_presession: str | None,
    ) -> Response:
        had_flash = FLASH_COOKIE in cookies
        try:
            result = route.handler(request)
        except BadRequest as bad:
            return self._error(400, "Bad request", str(bad), request, tools)
        except ParamValidationError as invalid:
            message = _VALUE_IN_MESSAGE.sub("", str(invalid))
            return self._error(400, "Not valid", message, request, tools)
        except ClientError as error:
            return self._api_error(error, request, tools)
        except BotoCoreError as error:
            log.warning("console page %s: %s", _area(request.path), type(error).__name__)
            return self._error(
                502, "Unavailable", "Khoa did not answer the console's request.", request, tools
            )
        if isinstance(result, Redirect):
            return self._redirect(result, tools, had_flash=False)
        if isinstance(result, Page):
            response = self._page(result, request)
            if had_flash:
                response.headers.append(
                    (b"set-cookie", cookie(FLASH_COOKIE, "", secure=tools.secure, max_age=0))
                )
            if new_presession is not None:  # the sign-in form's CSRF key
                response.headers.append(
                    (b"set-cookie", cookie(PRESESSION_COOKIE, new_presession, secure=tools.secure))
                )
            return response
        if isinstance(result, Response):
            return result
        raise TypeError(f"a console handler returned {type(result).__name__}")

    def _api_error(self, error: ClientError, request: Request, tools: Tools) -> Response:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
        if code in _SIGNED_OUT_CODES and request.session is not None:
            self.sessions.end(request.session.token)
            redirect = Redirect(
                PREFIX + "/signin",
                notice="Your session's credentials no longer work. Sign in again.",
                cookies=[cookie(SESSION_COOKIE, "", secure=tools.secure, max_age=0)],
            )
            return self._redirect(redirect, tools, had_flash=False)
        if "AccessDenied" in code:  # KMS and Secrets Manager answer AccessDenied with HTTP 400
            status = 403
        title = "Not authorised" if status == 403 else "Refused"
        return self._error(status, title, message or code, request, tools, code=code)

    def _page(self, page: Page, request: Request) -> Response:
        values = dict(request.context)
        values["flash"] = request.flash
        values.update(page.values)
        return Response(page.status, self.templates.render(page.template, values), HTML)

    def _redirect(self, redirect: Redirect, tools: Tools, *, had_flash: bool) -> Response:
        response = Response(303, b"", HTML, [(b"location", _header_safe(redirect.location))])
        for value in redirect.cookies:
            response.headers.append((b"set-cookie", value))
        if redirect.notice:
            encoded = base64.urlsafe_b64encode(redirect.notice[:300].encode()).decode().rstrip("=")
            response.headers.append(
                (b"set-cookie", cookie(FLASH_COOKIE, encoded, secure=tools.secure, max_age=60))
            )
        return response

    def _error(
        self, status: int, title: str, message: str, request: Request | None, tools: Tools, code: str = ""
    ) -> Response:
        values: dict[str, Any] = {
            "session": request.session if request else None,
            "csrf_token": request.context.get("csrf_token", "") if request else "",
            "regions": tools.settings.regions,
            "dev": tools.settings.dev,
            "path": request.path if request else "",
            "flash": None,
            "title": title,
            "message": message,
            "code": code,
        }
        return Response(status, self.templates.render("error.html", values), HTML)

    def _static(self, name: str) -> Response:
        content = self.static.get(name)
        if content is None:
            return Response(404, b"not found", b"text/plain; charset=utf-8")
        suffix = name[name.rindex(".") :]
        return Response(200, content, _STATIC_TYPES[suffix], [(b"cache-control", b"public, max-age=3600")])


def _area(path: str) -> str:
    """What a log line names of a console path: its area only (``/console/link/<token>`` carries a
    sign-in link's token, which no log may hold)."""
    return "/".join(path.split("/", 3)[:3])


def _query(scope: Scope) -> dict[str, list[str]]:
    """The query string's fields; more than 100 is a bad request (no console page takes so many)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
        return parse_qs(raw, keep_blank_values=True, max_num_fields=100)
    except ValueError as exc:  # parse_qs's "Max number of fields exceeded"
        raise BadRequest("This address has too many query parameters.") from exc


def _header_safe(location: str) -> bytes:
    """A redirect's target as a header value: printable ASCII, anything else percent-encoded (UTF-8).
    Targets are console paths built or checked by the pages (safe_next), so this changes nothing for
    them; it keeps one that was not from failing the answer (a 500 after the page's action was done)
    or from being refused by the server (CR/LF: the connection dropped without an answer)."""
    return quote(location, safe=PRINTABLE_ASCII).encode("ascii")


def _read_flash(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()[:300]
    except (ValueError, UnicodeDecodeError):
        return None
