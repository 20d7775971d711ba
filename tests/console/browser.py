"""Debian's chromium driven by Python Playwright (no browser download), for the console's tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Where screenshots go (CI keeps them as artefacts): $MRINODE_ARTEFACTS or var/artefacts/console.
ARTEFACTS = Path(os.environ.get("MRINODE_ARTEFACTS", Path(__file__).resolve().parents[2] / "var" / "artefacts")) / "console"


@contextmanager
def chromium_page(width: int = 1280, height: int = 860) -> Iterator[Any]:
    """A fresh headless chromium page (its own profile folder), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mrinode-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": width, "height": height}, locale="en-GB",
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
