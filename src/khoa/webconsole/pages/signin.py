"""Signing in and out: with an access key (an IAM user's, the account root's, or an assumed role's
temporary one), or with a single-use link minted by ``khoa console-link`` for a role.

Either way the credentials are checked by calling STS GetCallerIdentity with them through the API,
so a sign-in is authenticated exactly as any API call is, and recorded in the trail with the
console's user agent. A sign-in always starts a new session token (no fixation), and signing out
deletes the session row, so its cookie opens nothing on any worker or node afterwards.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from khoa.auth.sessions import issue_session
from khoa.services.sts.store import StsStore
from khoa.webconsole.cookies import PRESESSION_COOKIE, SESSION_COOKIE, cookie, safe_next
from khoa.webconsole.http import BadRequest, Page, Redirect, Request, Route
from khoa.webconsole.sessions import SessionCredentials
from khoa.webconsole.tools import Tools

_REFUSED = "Sign-in failed: these credentials were not accepted."
_TOO_MANY = "Too many failed sign-ins from this address. Wait a minute, then try again."
LINK_SESSION_NAME = "khoa-console-link"


def signin_form(request: Request) -> Page:
    return Page(
        "signin.html",
        {
            "title": "Sign in",
            "next": safe_next(request.arg("next", "/console/")),
            "region": request.tools.settings.default_region,
            "error": None,
        },
    )


def signin(request: Request) -> Page | Redirect:
    tools = request.tools
    region = request.field("region", tools.settings.default_region).strip()
    next_path = safe_next(request.field("next", "/console/"))
    if region not in tools.settings.regions:
        raise BadRequest("That region is not served here.")
    access_key_id = request.field("access_key_id", "").strip()
    secret = request.field("secret_access_key", "")
    session_token = request.field("session_token", "").strip() or None
    if not access_key_id or not secret:
        return _refused(request, region, next_path, "Enter an access key ID and a secret access key.")
    address = tools.client_address
    if tools.failed_sign_ins.blocked(address):
        return _refused(request, region, next_path, _TOO_MANY, status=429)
    credentials = SessionCredentials(access_key_id, secret, session_token)
    started = _start(request, tools, credentials, region, tools.settings.console_session_seconds)
    if started is None:
        tools.failed_sign_ins.failed(address)
        return _refused(request, region, next_path, _REFUSED)
    return _signed_in(request, started, next_path)


def _start(
    request: Request, tools: Tools, credentials: SessionCredentials, region: str, lifetime: float
) -> str | None:
    """Check ``credentials`` with GetCallerIdentity (through the API) and start a session: its token."""
    try:
        identity = tools.api_for(credentials, region).client("sts").get_caller_identity()
    except (ClientError, BotoCoreError):
        return None
    if request.session is not None:
        tools.sessions.end(request.session.token)
    return tools.sessions.create(
        account_id=identity["Account"],
        principal_arn=identity["Arn"],
        credentials=credentials,
        region=region,
        now=tools.now(),
        lifetime_seconds=lifetime,
    )


def _signed_in(request: Request, token: str, next_path: str) -> Redirect:
    secure = request.tools.secure
    return Redirect(
        next_path,
        cookies=[
            cookie(SESSION_COOKIE, token, secure=secure),
            cookie(PRESESSION_COOKIE, "", secure=secure, max_age=0),
        ],
    )


def _refused(request: Request, region: str, next_path: str, message: str, status: int = 401) -> Page:
    return Page(
        "signin.html",
        {"title": "Sign in", "next": next_path, "region": region, "error": message},
        status=status,
    )


def signout(request: Request) -> Redirect:
    request.tools.sessions.end(request.signed_in.token)
    return Redirect(
        "/console/signin",
        notice="You are signed out.",
        cookies=[cookie(SESSION_COOKIE, "", secure=request.tools.secure, max_age=0)],
    )


def choose_region(request: Request) -> Redirect:
    region = request.field("region").strip()
    if region not in request.tools.settings.regions:
        raise BadRequest("That region is not served here.")
    request.tools.sessions.set_region(request.signed_in, region)
    return Redirect(safe_next(request.field("next", "/console/")))


def link_form(request: Request) -> Page:
    grant = request.tools.sessions.peek_link(request.params["token"], request.tools.now())
    if grant is None:
        return _link_gone()
    return Page(
        "link.html",
        {"title": "Sign in with a link", "role_arn": grant.role_arn, "token": request.params["token"]},
    )


def redeem_link(request: Request) -> Page | Redirect:
    """Use the link up, start a role session for it (as AssumeRole would, without a caller: the
    operator who minted the link vouched for it), and sign in with that session's credentials."""
    tools = request.tools
    now = tools.now()
    grant = tools.sessions.redeem_link(request.params["token"], now)
    if grant is None:
        return _link_gone()
    runtime = tools.runtime
    role = StsStore(runtime.engine, runtime.barrier).role(grant.account_id, grant.role_arn)
    if role is None:
        return _link_gone()
    lifetime = min(tools.settings.console_session_seconds, float(role.max_session_duration or 3600))
    issued = issue_session(
        runtime.engine,
        runtime.barrier,
        account_id=grant.account_id,
        role_id=role.principal_id,
        role_arn=grant.role_arn,
        session_name=LINK_SESSION_NAME,
        now=runtime.clock.now(),
        duration_seconds=int(lifetime),
    )
    credentials = SessionCredentials(issued.access_key_id, issued.secret_access_key, issued.session_token)
    started = _start(request, tools, credentials, tools.settings.default_region, lifetime)
    if started is None:
        return _link_gone()
    return _signed_in(request, started, "/console/")


def _link_gone() -> Page:
    return Page(
        "error.html",
        {
            "title": "Link not valid",
            "message": "This sign-in link has expired or was already used. Ask for a new one.",
            "code": "",
        },
        status=404,
    )


ROUTES = [
    Route("GET", "/console/signin", signin_form, public=True),
    Route("POST", "/console/signin", signin, public=True),
    Route("POST", "/console/signout", signout),
    Route("POST", "/console/region", choose_region),
    Route("GET", "/console/link/{token}", link_form, public=True),
    Route("POST", "/console/link/{token}", redeem_link, public=True),
]
