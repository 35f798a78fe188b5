"""EmergencyRotateSecret: rotate a secret now and make its leaked values stop working.

Authorised before it runs as ``khoa:EmergencyRotateSecret`` and as ``secretsmanager:RotateSecret`` on
the secret (authtable.py); the work is respond.emergency_rotate's.
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.leaks import respond
from khoa.services.leaks.backend import LeaksBackend


def emergency_rotate_secret(
    backend: LeaksBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    return respond.emergency_rotate(backend, ctx, params["SecretId"])


OPERATIONS = {"EmergencyRotateSecret": emergency_rotate_secret}
