"""The browser-test support itself: the system Chromium starts under Playwright, runs a page's script,
takes clicks, and leaves a screenshot artifact. A tiny page served from a thread of this process, so a
failure here points at the browser set-up, not at the console."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.browser import chromium_browser, new_page, screenshot

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Khoa browser self-test</title></head>
<body>
<h1 id="title">Browser support</h1>
<button id="press" type="button">Press</button>
<p id="count">0</p>
<script>
  let presses = 0;
  document.getElementById("press").addEventListener("click", () => {
    presses += 1;
    document.getElementById("count").textContent = String(presses);
  });
</script>
</body></html>
"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is not the place for access logs."""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page on a free port of 127.0.0.1 (port 0: safe beside other pytest-xdist workers)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as browser:
        yield browser


def test_clicks_run_the_page_script_and_a_screenshot_is_kept(
    browser: Browser, site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KHOA_TEST_ARTIFACTS", str(tmp_path))
    with new_page(browser) as page:
        page.goto(site)
        assert page.title() == "Khoa browser self-test"
        assert page.locator("#title").inner_text() == "Browser support"
        page.click("#press")
        page.click("#press")
        assert page.locator("#count").inner_text() == "2"
        saved = screenshot(page, "browser-support/self test")
    assert saved == tmp_path / "screenshots" / "browser-support-self-test.png"
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary file left behind
