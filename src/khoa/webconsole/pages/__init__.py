"""The console's pages, one module per area; each declares its ``ROUTES`` (khoa.webconsole.http)."""

from __future__ import annotations

from khoa.webconsole.http import Route
from khoa.webconsole.pages import audit, home, kms, ops, parameters, secrets, signin

ROUTES: list[Route] = [
    *signin.ROUTES,
    *home.ROUTES,
    *kms.ROUTES,
    *secrets.ROUTES,
    *parameters.ROUTES,
    *audit.ROUTES,
    *ops.ROUTES,
]
