"""Khoa's leak detection (``KhoaLeaks``, signing name ``khoa``): CheckLeakedValues,
ReportLeakedValues and EmergencyRotateSecret, over keyed fingerprints of every value Khoa holds.

The model is Khoa's own, in botocore's layout (khoa/protocol/models/khoa-leaks); clients load it
with khoa.client.leaks.leaks_client.
"""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind
from khoa.services.leaks import authtable, check, rotate
from khoa.services.leaks.backend import LeaksBackend

SERVICE_NAME = "khoa-leaks"


def build_service(leaks: LeaksBackend) -> Service:
    return Service(
        name=SERVICE_NAME,
        signing_name="khoa",
        target_prefix="KhoaLeaks",
        model=ServiceModel(SERVICE_NAME),
        handlers=bind(leaks, check.OPERATIONS, rotate.OPERATIONS),
        authorizer=authtable.table(leaks),
    )
