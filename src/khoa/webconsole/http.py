"""The console's HTTP vocabulary: a parsed browser request, routes, and the answers pages give.

Page modules (``khoa.webconsole.pages``) declare ``ROUTES``; each handler takes a :class:`Request`
and returns a :class:`Page` (a template to render), a :class:`Redirect` or a raw
:class:`~khoa.server.asgi.Response`. Handlers run on a console thread, never on the event loop, so
they may call the API (``request.api.client(...)``), which waits for the loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from khoa.webconsole.api import ConsoleApi
    from khoa.webconsole.sessions import ConsoleSession
    from khoa.webconsole.tools import Tools


class BadRequest(Exception):
    """A console request that cannot be acted on (missing or malformed field): answered 400."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    params: dict[str, str]  # the route's path parameters, unquoted
    session: ConsoleSession | None
    api: ConsoleApi | None
    tools: Tools
    user_agent: str = ""
    flash: str | None = None  # a notice left by the previous action (shown once)
    context: dict[str, Any] = field(default_factory=dict)  # facts for every template (khoa.webconsole.app)

    def arg(self, name: str, default: str = "") -> str:
        """A query-string value (the first, if repeated)."""
        values = self.query.get(name)
        return values[0] if values else default

    def field(self, name: str, default: str | None = None) -> str:
        """A form field; a missing one without a default is a bad request."""
        values = self.form.get(name)
        if values:
            return values[0]
        if default is None:
            raise BadRequest(f"The form field {name!r} is missing.")
        return default

    def require_confirmation(self) -> None:
        """A destructive action goes ahead only with its form's confirmation box ticked (the browser
        requires it too; this holds for a form sent any other way)."""
        if self.field("confirm", "") != "yes":
            raise BadRequest("This action needs its confirmation box ticked.")

    @property
    def signed_in(self) -> ConsoleSession:
        """The session (routes that need none say so; every other route has one)."""
        if self.session is None:
            raise RuntimeError("this route needs a signed-in session")
        return self.session

    @property
    def client_api(self) -> ConsoleApi:
        if self.api is None:
            raise RuntimeError("this route needs a signed-in session")
        return self.api


@dataclass
class Page:
    """Render ``template`` with ``values`` (plus the console's common values) at ``status``."""

    template: str
    values: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class Redirect:
    """See other (303): where to go after an action, with a one-time notice to show there."""

    location: str
    notice: str | None = None
    cookies: list[bytes] = field(default_factory=list)  # Set-Cookie values (sign-in, sign-out)


Handler = Callable[[Request], Any]  # returns Page | Redirect | Response

_PARAMETER = re.compile(r"\{(\w+)(?::(path))?\}")


@dataclass(frozen=True)
class Route:
    """``pattern`` is a path under /console with ``{name}`` (one segment) or ``{name:path}`` (the rest,
    slashes included) parameters. ``public`` routes need no session (sign-in); every POST route's
    form is checked for the CSRF token before its handler runs, public or not."""

    method: str
    pattern: str
    handler: Handler
    public: bool = False

    def compiled(self) -> re.Pattern[str]:
        parts: list[str] = []
        last = 0
        for match in _PARAMETER.finditer(self.pattern):
            parts.append(re.escape(self.pattern[last : match.start()]))
            parts.append(f"(?P<{match.group(1)}>{'.+' if match.group(2) else '[^/]+'})")
            last = match.end()
        parts.append(re.escape(self.pattern[last:]))
        return re.compile("^" + "".join(parts) + "$")


def parse_form(body: bytes) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body (malformed input is a bad request, not a 500)."""
    try:
        return parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=1000
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The form could not be read.") from exc


def page_arguments(max_results: int, next_token: str | None, **arguments: Any) -> dict[str, Any]:
    """The arguments of an API call for one page of a list: ``arguments``, ``MaxResults``, and
    ``NextToken`` only when there is one (the APIs refuse an empty token; the first page has none)."""
    page = {**arguments, "MaxResults": max_results}
    if next_token:
        page["NextToken"] = next_token
    return page


def page_size(request: Request, largest: int) -> int:
    """The page size a list page is asked for (``per_page``, default ``largest``): a whole number from
    1 to ``largest`` (the API's largest page), else a bad request."""
    try:
        value = int(request.arg("per_page", str(largest)))
    except ValueError:
        value = 0
    if not 1 <= value <= largest:
        raise BadRequest(f"per_page must be a whole number from 1 to {largest}.")
    return value
