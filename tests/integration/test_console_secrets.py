"""The console's Secrets Manager pages over HTTP: the list (filter, paging), a secret's page, revealing
a value (audited as the console's GetSecretValue, never in a URL, a redirect or the log), the actions
(create, put a value, rotate now, cancel rotation) and a principal refused the read."""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

from tests.support import rotation
from tests.support.console import ConsoleClient, ConsoleResponse
from tests.support.identity import new_user
from tests.support.server import ACCOUNT_ID, KhoaServer

_NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


@pytest.fixture(scope="module")
def sm(server: KhoaServer) -> Any:
    return server.client("secretsmanager")


def _prefix() -> str:
    return f"console-sm-{uuid.uuid4().hex[:10]}"


def _detail(console: ConsoleClient, secret_id: str) -> ConsoleResponse:
    page = console.get("/console/secrets/detail", {"id": secret_id})
    assert page.status == 200, page.plain
    return page


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post_raw(console: ConsoleClient, path: str, data: dict[str, str]) -> tuple[int, dict[str, str]]:
    """POST a form without following the redirect: the status and the headers (Location, cookies)."""
    fields = dict(data, csrf_token=console.last.csrf if console.last and console.last.csrf else "")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(console.jar), _NoRedirect)
    request = urllib.request.Request(
        console.endpoint + path,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
        method="POST",
    )
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_list_filters_by_name_and_pages(console: ConsoleClient, sm: Any) -> None:
    prefix = _prefix()
    names = [f"{prefix}/app/{n}" for n in ("a", "b", "c")]
    for name in names:
        sm.create_secret(Name=name, SecretString="x", Description=f"about {name[-1]}")

    first = console.get("/console/secrets", {"q": prefix, "per_page": "2"})
    assert first.status == 200
    shown = [name for name in names if name in first.plain]
    assert len(shown) == 2 and "Name Description Last changed" in first.plain
    next_link = _NEXT.search(first.text)
    assert next_link is not None
    second = console.get(html.unescape(next_link.group(1)))
    assert second.status == 200
    assert {name for name in names if name in second.plain} == set(names) - set(shown)
    assert "First page" in second.plain

    assert names[0] not in console.get("/console/secrets", {"q": prefix + "-nothing"}).plain
    assert console.get("/console/secrets", {"per_page": "500"}).status == 400


def test_detail_shows_versions_stages_policy_and_tags(console: ConsoleClient, sm: Any) -> None:
    name = f"{_prefix()}/db/password"
    arn = sm.create_secret(Name=name, SecretString="one", Tags=[{"Key": "team", "Value": "payments"}])["ARN"]
    first = sm.list_secret_version_ids(SecretId=arn)["Versions"][0]["VersionId"]
    second = sm.put_secret_value(SecretId=arn, SecretString="two")["VersionId"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConsoleReaders",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "secretsmanager:DescribeSecret",
                "Resource": "*",
            }
        ],
    }
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=json.dumps(policy))

    page = _detail(console, name)
    text = page.plain
    assert name in text and arn in text
    assert f"{second} AWSCURRENT" in text and f"{first} AWSPREVIOUS" in text
    assert '"Sid": "ConsoleReaders"' in text
    assert "team payments" in text
    assert "Reveal value" in text and "one" not in re.findall(r"<pre[^>]*>(.*?)</pre>", page.text, re.S)
    assert "not enabled" in text and "Not replicated" in text
    assert console.get("/console/secrets/detail").status == 400
    assert console.get("/console/secrets/detail", {"id": name + "-missing"}).status == 400


def test_reveal_is_audited_and_never_leaves_the_page(
    server: KhoaServer, console: ConsoleClient, sm: Any
) -> None:
    value = f"console-reveal-{uuid.uuid4().hex}"
    name = f"{_prefix()}/reveal/me"
    arn = sm.create_secret(Name=name, SecretString="placeholder")["ARN"]
    _detail(console, arn)
    # Put the value through the console (a form value): the redirect and its notice never carry it.
    status, headers = _post_raw(console, "/console/secrets/put-value", {"id": arn, "value": value})
    assert status == 303 and value not in json.dumps(headers)
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value

    page = _detail(console, arn)
    assert value not in page.text
    revealed = console.post("/console/secrets/reveal", {"id": arn, "version_stage": "AWSCURRENT"})
    assert revealed.status == 200
    assert re.search(
        r'<pre class="revealed"[^>]*data-hide-after="30"[^>]*>' + value + "</pre>", revealed.text
    )
    assert "data-hide-note" in revealed.text and "hidden again in 30 s" in revealed.plain
    assert value not in revealed.url and revealed.headers.get("cache-control") == "no-store"

    trail = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": arn}], MaxResults=50
    )["Events"]
    reads = [json.loads(e["CloudTrailEvent"]) for e in trail if e["EventName"] == "GetSecretValue"]
    assert any("khoa-console" in record.get("userAgent", "") for record in reads)
    assert value not in json.dumps([e["CloudTrailEvent"] for e in trail])
    assert value not in server.log_path.read_text(errors="replace")

    binary = sm.create_secret(Name=f"{_prefix()}/binary", SecretBinary=b"\x00\x01\x02")["ARN"]
    shown = console.post("/console/secrets/reveal", {"id": binary})
    assert shown.status == 200 and "binary value, 3 bytes" in shown.plain


def test_create_secret_and_put_value(console: ConsoleClient, sm: Any) -> None:
    name = f"{_prefix()}/created/here"
    console.get("/console/secrets/new")
    created = console.post(
        "/console/secrets/create",
        {"name": name, "description": "made in the console", "value": "first value"},
    )
    assert created.status == 200 and name in created.plain and "created" in created.plain
    assert "detail?id=" in created.url and "first value" not in created.text
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "first value"
    assert sm.describe_secret(SecretId=name)["Description"] == "made in the console"

    updated = console.post("/console/secrets/put-value", {"id": name, "value": "second value"})
    assert (
        updated.status == 200 and "second value" not in updated.text and "New value stored" in updated.plain
    )
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "second value"
    assert console.post("/console/secrets/put-value", {"id": name, "value": ""}).status == 400
    assert console.post("/console/secrets/create", {"name": name, "value": "again"}).status == 400

    # Deletion with a recovery window needs its confirmation; restoring undoes it.
    _detail(console, name)
    assert console.post("/console/secrets/delete", {"id": name, "recovery_days": "7"}).status == 400
    _detail(console, name)
    deleted = console.post("/console/secrets/delete", {"id": name, "recovery_days": "7", "confirm": "yes"})
    assert (
        deleted.status == 200
        and "scheduled for deletion" in deleted.plain
        and "Restore secret" in deleted.plain
    )
    assert sm.describe_secret(SecretId=name).get("DeletedDate")
    restored = console.post("/console/secrets/restore", {"id": name})
    assert restored.status == 200 and "Secret restored" in restored.plain
    assert not sm.describe_secret(SecretId=name).get("DeletedDate")


def test_rotate_now_shows_outcomes_and_cancel_needs_confirm(
    server: KhoaServer, console: ConsoleClient, sm: Any
) -> None:
    # Without a rotation function, the API's refusal is shown.
    plain = f"{_prefix()}/no/rotation"
    sm.create_secret(Name=plain, SecretString="x")
    _detail(console, plain)
    refused = console.post("/console/secrets/rotate", {"id": plain})
    assert refused.status == 400 and "Refused" in refused.plain

    # One function (steered by the secret's tags): one secret rotates, the other fails at setSecret.
    function = rotation.register(
        server, f"console-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled"
    )
    good, bad = f"{_prefix()}/rotating/ok", f"{_prefix()}/rotating/broken"
    arns = {}
    for name, tags in ((good, []), (bad, [{"Key": "fail-at", "Value": "setSecret"}])):
        arns[name] = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}), Tags=tags)[
            "ARN"
        ]
        sm.rotate_secret(
            SecretId=name,
            RotationLambdaARN=function,
            RotationRules={"AutomaticallyAfterDays": 30},
            RotateImmediately=False,
        )
        _detail(console, name)
        started = console.post("/console/secrets/rotate", {"id": name})
        assert started.status == 200 and "Rotation started" in started.plain
    server.run_jobs()

    rotated = _detail(console, good).plain
    assert rotation.value_of(sm, good)["password"] != "v0"
    assert "succeeded" in rotated and "Rotation in progress or failed" not in rotated
    broken = _detail(console, bad).plain
    assert "Rotation in progress or failed" in broken
    assert "failed" in broken and "at setSecret" in broken and "told to fail at setSecret" in broken
    assert function in broken and "every 30 days" in broken

    assert console.post("/console/secrets/cancel-rotation", {"id": bad}).status == 400
    _detail(console, bad)
    cancelled = console.post("/console/secrets/cancel-rotation", {"id": bad, "confirm": "yes"})
    assert cancelled.status == 200 and "Rotation cancelled" in cancelled.plain
    assert not sm.describe_secret(SecretId=bad).get("RotationEnabled")


def test_a_principal_refused_the_read_sees_no_value(server: KhoaServer, sm: Any) -> None:
    value = f"refused-{uuid.uuid4().hex}"
    name = f"{_prefix()}/guarded"
    arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
    user = new_user(
        server,
        server.client("iam"),
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:DescribeSecret", "secretsmanager:List*"],
            "Resource": "*",
        },
        {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
    )
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(user.access_key_id, user.secret_access_key).status == 200
    page = _detail(console, arn)
    assert "not authorised to see this (secretsmanager:GetResourcePolicy)" in page.plain
    refused = console.post("/console/secrets/reveal", {"id": arn})
    assert refused.status == 403 and "Not authorised" in refused.plain
    assert value not in refused.text and "revealed" not in refused.text
