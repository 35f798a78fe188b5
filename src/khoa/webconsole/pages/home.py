"""The console's first page: who is signed in, and how this node is."""

from __future__ import annotations

from khoa.webconsole.http import Page, Request, Route


def home(request: Request) -> Page:
    identity = request.client_api.client("sts").get_caller_identity()
    return Page(
        "home.html",
        {"title": "Khoa", "identity": identity, "node": request.tools.node_status(identity)},
    )


ROUTES = [Route("GET", "/console/", home)]
