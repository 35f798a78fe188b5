"""The console's Alerts, Review and Health pages on the shared server: they render for the root
(alerts and findings through khoa-ops as the signed-in principal), filters and bad input, and a user
without ``khoa:ListAlerts`` gets the 403 page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_ops_api import raise_alert
from tests.support.console import ConsoleClient
from tests.support.identity import new_user
from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer


@pytest.fixture(scope="module")
def root(server: KhoaServer) -> ConsoleClient:
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY).status == 200
    return console


def test_alerts_page_lists_and_filters(server: KhoaServer, root: ConsoleClient) -> None:
    key_arn = raise_alert(server)
    page = root.get("/console/alerts")
    assert page.status == 200, page.plain
    assert "<h1>Alerts</h1>" in page.text and 'id="alerts-table"' in page.text
    assert key_arn in page.text and "key-deletion-scheduled" in page.text
    filtered = root.get("/console/alerts", {"severity": "critical", "rule": "key-deletion-scheduled"})
    assert filtered.status == 200 and key_arn not in filtered.text
    assert "No alerts match these filters." in filtered.plain
    assert root.get("/console/alerts", {"severity": "urgent"}).status == 400
    assert root.get("/console/alerts", {"next": "garbage"}).status == 400


def test_review_and_health_pages(server: KhoaServer, root: ConsoleClient) -> None:
    arn = server.client("secretsmanager").create_secret(Name=unique("ConsoleBadName"), SecretString="x")[
        "ARN"
    ]
    page = root.get("/console/review", {"severity": "low"})
    assert page.status == 200, page.plain
    assert 'id="review-counts"' in page.text and "Findings" in page.plain
    # the new secret's naming finding is low or medium: on some page of the listing
    seen, path = page.text, None
    while arn not in seen and (path := _next_link(root.last.text if root.last else "")):
        seen = root.get(path).text
    assert arn in seen
    high = root.get("/console/review", {"severity": "high"})
    assert high.status == 200 and arn not in high.text
    assert root.get("/console/review", {"severity": "critical"}).status == 400

    health = root.get("/console/health")
    assert health.status == 200
    assert 'id="health-facts"' in health.text
    for fact in ("Database", "Audit trail", "Seal backend", "Leader", "Mode"):
        assert fact in health.plain
    assert "sqlite" in health.plain


def test_user_without_the_grant_gets_403_and_signed_out_is_sent_to_sign_in(
    server: KhoaServer, iam: Any
) -> None:
    user = new_user(server, iam, {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"})
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(user.access_key_id, user.secret_access_key).status == 200
    page = console.get("/console/alerts")
    assert page.status == 403
    assert "Not authorised" in page.plain and "khoa:ListAlerts" in page.plain
    assert console.get("/console/review").status == 403
    anonymous = ConsoleClient(server.endpoint).get("/console/health")
    assert "/console/signin" in anonymous.url


def test_how_the_node_is_built_is_shown_to_the_operator_only(server: KhoaServer, iam: Any) -> None:
    """A user denied everything sees what /_khoa/ready tells anyone (status, database and trail
    health, leadership), never the seal backend, database kind or mode."""
    user = new_user(server, iam, {"Effect": "Deny", "Action": "*", "Resource": "*"})
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(user.access_key_id, user.secret_access_key).status == 200
    for path in ("/console/health", "/console/"):
        page = console.get(path)
        for detail in ("Seal backend", "sqlite", "Mode", "production"):
            assert detail not in page.plain, (path, detail)
    assert "Leader" in console.get("/console/health").plain


def _next_link(text: str) -> str | None:
    marker = 'rel="next" href="'
    start = text.find(marker)
    if start < 0:
        return None
    href = text[start + len(marker) : text.index('"', start + len(marker))]
    return href.replace("&amp;", "&")
