"""Browser tests in real headless Chromium: Debian's ``chromium`` driven by Playwright's Python client.

Playwright never downloads a browser of its own here (that needs the network and is not the browser
users run): every launch names the system binary, ``/usr/bin/chromium`` (``make chromium`` installs it).
When it is missing, tests skip visibly, or fail under ``KHOA_REQUIRE_SERVICES=1`` (CI), through
``tests.conftest.missing_service``.

A test module shares one browser between its tests (starting Chromium costs about a second)::

    @pytest.fixture(scope="module")
    def browser() -> Iterator[Browser]:
        with chromium_browser() as browser:
            yield browser

and gives each test a fresh page (its own cookies and storage) with ``new_page(browser)``.

Screenshots are kept as test artifacts: ``screenshot(page, name)`` writes ``<name>.png`` under
``$KHOA_TEST_ARTIFACTS/screenshots`` (default ``<repo>/artifacts/screenshots``, ignored by git). Names
should start with the test module's subject (``console-keys-list``) so that two pytest-xdist workers
never write the same file; each file is written whole (a temporary file renamed into place), so a
reader never sees half a PNG even then.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Playwright is imported only when a browser test runs (it is slow to import).
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
# --headless: no display here. --no-sandbox: the tests may run as root, where Chromium's sandbox
# refuses to start. The rest keep Chromium from talking to anything but the page under test: without
# the background-networking ones this machine refuses many of its connections and the browser stalls.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A fixed viewport, so that screenshots of the same page compare across runs and machines.
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
REPO = Path(__file__).resolve().parents[2]
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium ({CHROMIUM}, Debian package chromium; `make chromium`) is not installed"
    return None


@contextlib.contextmanager
def chromium_browser(timeout_ms: float = 15_000) -> Iterator[Browser]:
    """Playwright's sync API over the system Chromium, closed (with its driver) on exit.

    Skips the calling test (fails it under ``KHOA_REQUIRE_SERVICES=1``) when Chromium is missing.
    """
    from tests.conftest import missing_service

    reason = chromium_missing()
    if reason:
        missing_service(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS), timeout=timeout_ms
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser: Browser, timeout_ms: float = 10_000) -> Iterator[Page]:
    """A page in a context of its own (no cookies or storage shared with other tests)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(timeout_ms)
    try:
        yield context.new_page()
    finally:
        context.close()


def artifacts_dir() -> Path:
    """Where test artifacts go: ``$KHOA_TEST_ARTIFACTS``, else ``<repo>/artifacts``."""
    configured = os.environ.get("KHOA_TEST_ARTIFACTS")
    return Path(configured) if configured else REPO / "artifacts"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of ``page`` as ``<artifacts>/screenshots/<name>.png`` and return its path."""
    directory = artifacts_dir() / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    stem = _SAFE_NAME.sub("-", name).strip("-.") or "page"
    target = directory / f"{stem}.png"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".png")
    os.close(handle)
    try:
        page.screenshot(path=temporary, full_page=full_page)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
