"""Headless Chromium for dashboard tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Playwright's own browsers are never downloaded: the tests launch the system Chromium by path and
skip (with a reason) where it is not installed. :class:`PageErrors` collects what went wrong inside
the page (uncaught exceptions, ``console.error``, failed requests) so a failing test can show it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    Response,
    ViewportSize,
    async_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
WAIT_MS = 30_000
"""The longest any single browser wait may take."""


def require_chromium() -> None:
    """Skip the calling test when the system Chromium is not installed."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The system Chromium, headless, closed on the way out whatever happens."""
    require_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True, timeout=WAIT_MS
        )
        try:
            yield browser
        finally:
            with contextlib.suppress(Error):
                await browser.close()


@dataclass
class PageErrors:
    """What went wrong in a page: uncaught errors, console errors, failed and 5xx requests."""

    uncaught: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.uncaught.append(str(exc)))
        page.on("console", self._console)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(message.text)

    def _failed(self, request: Request) -> None:
        # The event stream is cut when the page goes away: not an error of the page.
        if not request.url.endswith("/api/stream"):
            self.requests.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 500:
            self.requests.append(f"{response.request.method} {response.url}: HTTP {response.status}")

    def summary(self) -> str:
        parts = [
            f"{name}: {items}"
            for name, items in (
                ("uncaught", self.uncaught),
                ("console", self.console),
                ("requests", self.requests),
            )
            if items
        ]
        return "; ".join(parts) or "no page errors"


async def screenshot(page: Page, path: Path) -> Path:
    """A full-page PNG at ``path``, printed so the developer can look at it."""
    await page.screenshot(path=str(path), full_page=True, timeout=WAIT_MS)
    print(f"screenshot: {path}")
    return path
