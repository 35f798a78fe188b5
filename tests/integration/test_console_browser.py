"""The web console in a real browser: headless Chromium (Debian's) driven by Playwright, against a real
server. Signs in through the form, browses every page (a screenshot of each is kept as a test
artifact, at 1280 px and on a phone's width), reveals a secret and finds the reveal in the trail,
rotates a secret, schedules and cancels a key deletion, is refused an action its policy denies, and
signs out. What each page shows in detail is tested over HTTP in the other test_console_* modules.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support import rotation
from tests.support.browser import chromium_browser, new_page, screenshot
from tests.support.identity import new_user
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as instance:
        yield instance


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    """Resources of this module, by a prefix no other test uses."""
    prefix = f"console-browser-{uuid.uuid4().hex[:8]}"
    return {"prefix": prefix, "secret": f"{prefix}/app/db", "parameters": f"/{prefix}/app"}


@pytest.fixture(scope="module")
def resources(server: KhoaServer, names: dict[str, str]) -> dict[str, Any]:
    kms = server.client("kms")
    key = kms.create_key(Description="console browser test")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{names['prefix']}", TargetKeyId=key)
    sm = server.client("secretsmanager")
    value = f"s3cret-{uuid.uuid4().hex}"
    arn = sm.create_secret(Name=names["secret"], SecretString=value, Description="shown in a browser")["ARN"]
    ssm = server.client("ssm")
    ssm.put_parameter(
        Name=f"{names['parameters']}/db/password", Value="pw-" + uuid.uuid4().hex, Type="SecureString"
    )
    ssm.put_parameter(Name=f"{names['parameters']}/db/url", Value="postgres://db:5432/app", Type="String")
    return {"key": key, "secret_arn": arn, "value": value}


def _sign_in(
    page: Page, server: KhoaServer, access_key_id: str, secret: str, shot: str | None = None
) -> None:
    page.goto(server.endpoint + "/")  # a browser at the root is sent to the console, then to sign-in
    expect(page).to_have_url(re.compile(r"/console/signin"))
    page.get_by_label("Access key ID").fill(access_key_id)
    page.get_by_label("Secret access key").fill(secret)
    if shot:
        screenshot(page, shot)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def _no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_browse_every_page_and_reveal_a_secret(
    server: KhoaServer, browser: Browser, names: dict[str, str], resources: dict[str, Any]
) -> None:
    with new_page(browser) as page:
        page.clock.install()  # the revealed value's timer runs on this clock
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        _sign_in(page, server, ACCESS_KEY_ID, SECRET_ACCESS_KEY, shot="console-signin")
        expect(page.get_by_role("heading", name="Khoa console")).to_be_visible()
        screenshot(page, "console-home")
        # Keyboard first: the first Tab reaches the skip link, which leads to the content.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#main"

        page.get_by_role("navigation", name="Main").get_by_role("link", name="KMS keys").click()
        expect(page).to_have_url(re.compile(r"/console/kms$"))
        screenshot(page, "console-kms-keys")
        page.goto(f"{server.endpoint}/console/kms/keys/{resources['key']}")
        expect(page.locator("#key-policy")).to_contain_text("kms:*")
        screenshot(page, "console-kms-key")

        page.goto(f"{server.endpoint}/console/secrets?q={names['prefix']}")
        page.get_by_role("link", name=names["secret"]).click()
        expect(page.locator("#secret-name")).to_have_text(names["secret"])
        assert resources["value"] not in page.content()  # not before an explicit click
        page.get_by_role("button", name="Reveal value").click()
        expect(page.locator("#revealed-value")).to_have_text(resources["value"])
        assert resources["value"] not in page.url
        screenshot(page, "console-secret-revealed")
        page.clock.fast_forward(31_000)
        expect(page.locator("#revealed-value")).not_to_contain_text(resources["value"])
        screenshot(page, "console-secret")

        # The reveal is in the trail: the console's GetSecretValue, as this principal.
        page.goto(f"{server.endpoint}/console/audit")
        page.locator("#audit-attribute").select_option("ResourceName")
        page.locator("#audit-value").fill(resources["secret_arn"])
        page.get_by_role("button", name="Look up events").click()
        row = page.locator("#events-table tbody tr", has_text="GetSecretValue").first
        expect(row).to_be_visible()
        screenshot(page, "console-audit")
        row.get_by_role("link").click()
        record = json.loads(page.locator("#event-record").inner_text())
        assert record["eventName"] == "GetSecretValue" and "khoa-console" in record["userAgent"]
        assert resources["value"] not in page.content()
        screenshot(page, "console-audit-event")

        page.goto(f"{server.endpoint}/console/parameters?path={names['parameters']}/")
        page.get_by_role("link", name=f"{names['parameters']}/db/", exact=True).click()
        expect(page.get_by_text(f"{names['parameters']}/db/url")).to_be_visible()
        screenshot(page, "console-parameters")
        page.get_by_role("link", name=f"{names['parameters']}/db/password").click()
        expect(page.get_by_role("button", name="Reveal value")).to_be_visible()
        screenshot(page, "console-parameter")

        for path, shot in (
            ("/console/alerts", "console-alerts"),
            ("/console/review", "console-review"),
            ("/console/health", "console-health"),
        ):
            response = page.goto(server.endpoint + path)
            assert response is not None and response.status == 200, path
            served = response.text()
            assert "<script>" not in served and " style=" not in served, path
            screenshot(page, shot)
        # No console page needed anything the Content-Security-Policy had to block.
        assert not [m for m in messages if "Content Security Policy" in m], messages

    # On a phone's width the pages still fit: tables scroll inside their frame, the page does not.
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    try:
        phone = context.new_page()
        _sign_in(phone, server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        for path, shot in (
            ("/console/", "console-phone-home"),
            ("/console/secrets", "console-phone-secrets"),
        ):
            phone.goto(server.endpoint + path)
            assert _no_horizontal_scroll(phone), path
            screenshot(phone, shot)
    finally:
        context.close()


def test_rotate_a_secret(server: KhoaServer, browser: Browser, names: dict[str, str]) -> None:
    sm = server.client("secretsmanager")
    function = rotation.register(
        server, f"console-{uuid.uuid4().hex[:6]}", "tests.support.rotation:controlled"
    )
    name = f"{names['prefix']}/rotating"
    sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    with new_page(browser) as page:
        _sign_in(page, server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        page.goto(f"{server.endpoint}/console/secrets?q={name}")
        page.get_by_role("link", name=name).click()
        page.get_by_role("button", name="Rotate now").click()
        expect(page.get_by_role("status")).to_contain_text("Rotation started")
        server.run_jobs()
        page.reload()
        expect(page.locator("#rotation-outcome")).to_contain_text("succeeded")
        screenshot(page, "console-secret-rotated")
    assert rotation.value_of(sm, name)["password"] != "v0"


def test_schedule_and_cancel_a_key_deletion(
    server: KhoaServer, browser: Browser, resources: dict[str, Any]
) -> None:
    kms = server.client("kms")
    key = kms.create_key(Description="deleted and restored in a browser")["KeyMetadata"]["KeyId"]
    with new_page(browser) as page:
        _sign_in(page, server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        page.goto(f"{server.endpoint}/console/kms/keys/{key}")
        form = page.locator("#schedule-deletion")
        form.get_by_role("spinbutton").fill("7")
        form.get_by_role("button", name="Schedule deletion").click()
        # Not confirmed: the browser keeps the form (the checkbox is required) and nothing happens.
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
        form.get_by_role("checkbox").check()
        form.get_by_role("button", name="Schedule deletion").click()
        expect(page.locator("#key-state")).to_contain_text("PendingDeletion")
        expect(page.locator("#key-deletion")).to_contain_text("6 days")
        screenshot(page, "console-kms-key-pending-deletion")
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        page.get_by_role("button", name="Cancel deletion").click()
        expect(page.locator("#key-state")).to_contain_text("Disabled")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_a_denied_action_is_refused_and_sign_out_ends_the_session(
    server: KhoaServer, browser: Browser, resources: dict[str, Any]
) -> None:
    reader = new_user(
        server,
        server.client("iam"),
        {"Effect": "Allow", "Action": ["kms:Describe*", "kms:List*", "kms:Get*"], "Resource": "*"},
    )
    with new_page(browser) as page:
        _sign_in(page, server, reader.access_key_id, reader.secret_access_key)
        page.goto(f"{server.endpoint}/console/kms/keys/{resources['key']}")
        form = page.locator("#schedule-deletion")
        form.get_by_role("checkbox").check()
        form.get_by_role("button", name="Schedule deletion").click()
        expect(page.get_by_role("heading", name="Not authorised")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("kms:ScheduleKeyDeletion")
        screenshot(page, "console-refused")
        assert (
            server.client("kms").describe_key(KeyId=resources["key"])["KeyMetadata"]["KeyState"] == "Enabled"
        )

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("status")).to_contain_text("signed out")
        page.goto(server.endpoint + "/console/kms")
        expect(page).to_have_url(re.compile(r"/console/signin\?next=/console/kms"))
