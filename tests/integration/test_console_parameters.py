"""The console's Parameter Store pages over the wire: the tree by path (folders, leaves, breadcrumbs,
paging), a parameter's history and labels, revealing a SecureString only on a POST (and the trail's
record of it), putting a parameter, and refusals by policy and by bad input."""

from __future__ import annotations

import html
import json
import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.console import ConsoleClient
from tests.support.identity import eventually, new_user
from tests.support.server import KhoaServer

_NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


@pytest.fixture(scope="module")
def ssm(server: KhoaServer) -> Any:
    return server.client("ssm")


@pytest.fixture(scope="module")
def tree(ssm: Any) -> str:
    """/app-<uuid>/ with db/password (SecureString), db/host, db/replica/host, region and three labels."""
    root = f"/app-{uuid.uuid4().hex[:12]}"
    ssm.put_parameter(Name=f"{root}/db/password", Value="hunter2-secret", Type="SecureString")
    ssm.put_parameter(Name=f"{root}/db/host", Value="db.internal", Type="String", Description="primary")
    ssm.put_parameter(Name=f"{root}/db/host", Value="db2.internal", Type="String", Overwrite=True)
    ssm.put_parameter(Name=f"{root}/db/replica/host", Value="replica.internal", Type="String")
    ssm.put_parameter(Name=f"{root}/region", Value="eu", Type="String")
    ssm.label_parameter_version(Name=f"{root}/db/host", ParameterVersion=1, Labels=["blue"])
    return root


def test_tree_folders_leaves_breadcrumbs_and_paging(console: ConsoleClient, tree: str) -> None:
    page = console.get("/console/parameters", {"path": tree + "/"})
    assert page.status == 200, page.plain
    assert f'href="/console/parameters?path={quote(tree + "/db/", safe="/")}"' in page.text
    assert f"{tree}/region" in page.plain
    assert f"{tree}/db/host" not in page.plain  # one level only
    assert "more may exist" not in page.plain

    db = console.get("/console/parameters", {"path": tree + "/db"})
    assert db.status == 200
    # Breadcrumbs: the root, the app segment and db, each a link.
    assert 'href="/console/parameters?path=/"' in db.text
    assert f'href="/console/parameters?path={tree}/"' in db.text
    assert f"{tree}/db/replica/" in db.plain
    assert f"{tree}/db/password" in db.plain and f"{tree}/db/host" in db.plain
    assert "SecureString" in db.plain and "Standard" in db.plain and "primary" in db.plain
    assert "hunter2" not in db.text

    first = console.get("/console/parameters", {"path": tree + "/db/", "per_page": "1"})
    match = _NEXT.search(first.text)
    assert match, "a Next page link"
    assert f"{tree}/db/host" in first.plain and f"{tree}/db/password" not in first.plain
    second = console.get(html.unescape(match.group(1)))
    assert second.status == 200
    assert f"{tree}/db/password" in second.plain and f"{tree}/db/host" not in second.plain

    root = console.get("/console/parameters")
    assert root.status == 200
    assert f'href="/console/parameters?path={tree}/"' in root.text or "more may exist" in root.plain
    assert console.get("/console/parameters", {"path": "/", "per_page": "99"}).status == 400
    assert console.get("/console/parameters", {"path": "/bad path!/"}).status == 400


def test_detail_history_labels_and_label_action(console: ConsoleClient, ssm: Any, tree: str) -> None:
    name = f"{tree}/db/host"
    page = console.get("/console/parameters/detail", {"name": name})
    assert page.status == 200, page.plain
    assert "db2.internal" in page.plain and "db.internal" in page.plain  # value and history
    assert "blue" in page.plain
    assert 'id="history-table"' in page.text

    done = console.post("/console/parameters/label", {"name": name, "version": "2", "labels": "green"})
    assert done.status == 200 and "Labelled version 2" in done.plain
    labels = {p["Version"]: p.get("Labels", []) for p in ssm.get_parameter_history(Name=name)["Parameters"]}
    assert labels[2] == ["green"] and labels[1] == ["blue"]

    missing = console.get("/console/parameters/detail", {"name": f"{tree}/nope"})
    assert missing.status == 404


def test_secure_string_only_revealed_by_post(console: ConsoleClient, server: KhoaServer, tree: str) -> None:
    name = f"{tree}/db/password"
    page = console.get("/console/parameters/detail", {"name": name})
    assert page.status == 200
    assert "hunter2-secret" not in page.text
    assert "Reveal value" in page.plain

    revealed = console.post("/console/parameters/reveal", {"name": name})
    assert revealed.status == 200, revealed.plain
    assert re.search(
        r'<pre class="revealed"[^>]*data-hide-after="30"[^>]*>hunter2-secret</pre>', revealed.text
    )
    assert "data-hide-note" in revealed.text
    assert "hunter2" not in revealed.url
    assert revealed.headers.get("cache-control") == "no-store"

    trail = server.client("cloudtrail")

    def recorded() -> bool:
        events = trail.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetParameter"}], MaxResults=50
        )["Events"]
        records = [json.loads(e["CloudTrailEvent"]) for e in events]
        return any(
            "khoa-console" in r.get("userAgent", "")
            and (r.get("requestParameters") or {}).get("name") == name
            and (r.get("requestParameters") or {}).get("withDecryption") is True
            for r in records
        )

    eventually(recorded)


def test_put_through_console_and_refusals(
    console: ConsoleClient, server: KhoaServer, ssm: Any, tree: str
) -> None:
    name = f"{tree}/new/feature-flag"
    console.get("/console/parameters", {"path": tree + "/"})
    done = console.post(
        "/console/parameters/put",
        {"name": name, "type": "StringList", "value": "a,b,c", "description": "flags"},
    )
    assert done.status == 200, done.plain
    assert "Parameter saved as version 1" in done.plain
    assert quote(name, safe="") in done.url
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert got["Value"] == "a,b,c" and got["Type"] == "StringList"

    again = console.post("/console/parameters/put", {"name": name, "type": "String", "value": "x"})
    assert again.status == 400 and "ParameterAlreadyExists" in again.plain
    assert console.post("/console/parameters/put", {"name": name, "type": "Nope", "value": "x"}).status == 400
    assert console.post("/console/parameters/delete", {"name": name}).status == 400  # not confirmed
    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 1

    reader = new_user(
        server,
        server.client("iam"),
        {"Effect": "Allow", "Action": ["ssm:Describe*", "ssm:Get*"], "Resource": "*"},
    )
    other = ConsoleClient(server.endpoint)
    assert other.sign_in(reader.access_key_id, reader.secret_access_key).status == 200
    assert other.get("/console/parameters", {"path": tree + "/"}).status == 200
    refused = other.post(
        "/console/parameters/put", {"name": f"{tree}/denied", "type": "String", "value": "v"}
    )
    assert refused.status == 403 and "Not authorised" in refused.plain
