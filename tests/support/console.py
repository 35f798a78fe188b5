"""A plain HTTP client for the web console (no browser): a cookie jar, redirects followed, and the CSRF
token of the last page it read sent with every form, as a browser submitting that page's form would.

    console = ConsoleClient(server.endpoint)
    console.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    page = console.get("/console/kms")
    assert page.status == 200 and "alias/x" in page.text
    console.post("/console/kms/keys/<id>/disable", {})
"""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
_TAGS = re.compile(r"<[^>]+>")


@dataclass
class ConsoleResponse:
    status: int
    text: str
    headers: dict[str, str]
    url: str

    @property
    def csrf(self) -> str | None:
        match = _CSRF.search(self.text)
        return match.group(1) if match else None

    @property
    def plain(self) -> str:
        """The page's text without tags, entities decoded, whitespace collapsed (for assertions)."""
        return " ".join(html.unescape(_TAGS.sub(" ", self.text)).split())


class ConsoleClient:
    def __init__(self, endpoint: str, *, origin: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.origin = origin  # an Origin header to send with forms (None: none, as some browsers do)
        self.last: ConsoleResponse | None = None

    def _open(self, request: urllib.request.Request) -> ConsoleResponse:
        try:
            with self.opener.open(request, timeout=30) as answer:
                response = ConsoleResponse(
                    answer.status, answer.read().decode(), dict(answer.headers), answer.url
                )
        except urllib.error.HTTPError as error:
            response = ConsoleResponse(error.code, error.read().decode(), dict(error.headers), error.url)
        self.last = response
        return response

    def get(self, path: str, query: dict[str, str] | None = None) -> ConsoleResponse:
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self._open(urllib.request.Request(url, headers={"Accept": "text/html"}))

    def post(self, path: str, data: dict[str, str], *, csrf: str | None = None) -> ConsoleResponse:
        """POST a form; its CSRF token is ``csrf`` or the one on the last page read."""
        fields = dict(data)
        token = csrf if csrf is not None else (self.last.csrf if self.last else None)
        if token is not None and "csrf_token" not in fields:
            fields["csrf_token"] = token
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
        if self.origin:
            headers["Origin"] = self.origin
        body = urllib.parse.urlencode(fields).encode()
        return self._open(
            urllib.request.Request(self.endpoint + path, data=body, headers=headers, method="POST")
        )

    def sign_in(
        self, access_key_id: str, secret_access_key: str, session_token: str = "", region: str = "us-east-1"
    ) -> ConsoleResponse:
        self.get("/console/signin")
        return self.post(
            "/console/signin",
            {
                "access_key_id": access_key_id,
                "secret_access_key": secret_access_key,
                "session_token": session_token,
                "region": region,
                "next": "/console/",
            },
        )

    def cookie(self, name: str) -> str | None:
        for item in self.jar:
            if item.name == name:
                return item.value
        return None
