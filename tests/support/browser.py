"""Headless Chromium for the Studio's tests and benchmark: Debian's chromium, driven by
Playwright through its executable path (``playwright install`` downloads nothing here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def launch(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise RuntimeError("chromium is not installed: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def sign_in(page: Any, base_url: str, token: str) -> None:
    """Through the login page, as a person would; lands on the clusters page."""
    page.goto(f"{base_url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/clusters")


def chart_data(page: Any, testid: str, key: str) -> Any:
    """What a Studio chart drew, from the attributes it writes on its element (its canvas
    holds no text): ``x-ticks``/``y-ticks`` (labels), ``series``, ``last`` (each line's last
    value)."""
    raw = page.get_by_test_id(testid).get_attribute(f"data-{key}")
    return None if raw is None else json.loads(raw)
