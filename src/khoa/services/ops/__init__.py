"""Khoa's operator service (``KhoaOps``, signing name ``khoa``): ListAlerts and GetReviewFindings.

What operators read with ``khoa alerts list`` and ``khoa review`` (database commands on the server's
host), offered through the API as well, so that the web console can show it as the signed-in
principal: authorised by the caller's policies and recorded in the trail like any call. The model is
Khoa's own, in botocore's layout (khoa/protocol/models/khoa-ops); clients load it with
khoa.client.leaks.add_models.

Scope: a caller sees its own account's alerts and findings only. Installation-wide alerts and
findings (the audit sink, trail delivery, alert routing) belong to the installation's first account
(the one ``khoa server`` creates and the alert engine files them under): that account's operators
run the installation, while accounts made later with ``khoa account create`` are tenants, who should
not learn how the installation itself is doing.
"""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.base import Service, bind
from khoa.services.ops import alerts, authtable, review
from khoa.services.ops.backend import OpsBackend

SERVICE_NAME = "khoa-ops"


def build_service(ops: OpsBackend) -> Service:
    return Service(
        name=SERVICE_NAME,
        signing_name="khoa",
        target_prefix="KhoaOps",
        model=ServiceModel(SERVICE_NAME),
        handlers=bind(ops, alerts.OPERATIONS, review.OPERATIONS),
        authorizer=authtable.table(ops),
    )
