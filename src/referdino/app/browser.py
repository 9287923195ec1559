"""Headless Chromium for the app's browser test and the docs screenshots (Playwright's sync API on the system
Chromium: never `playwright install`, which downloads a browser build)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

CHROMIUM = os.environ.get("REFERDINO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "about", "chrome", "chrome-extension", "devtools"):
        return True
    return (parsed.hostname or "") in LOCAL_HOSTS


@contextmanager
def chromium(viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[Any, Any, list[str]]]:
    """(context, page, foreign): a fresh headless Chromium profile, a page in it, and the list of every request
    its pages made to a host that is not this machine (filled as they work)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="referdino-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True,
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                foreign: list[str] = []
                context.on("request", lambda r: None if is_local(r.url) else foreign.append(r.url))
                yield context, page, foreign
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
