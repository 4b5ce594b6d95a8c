"""The Studio's usage page in a real headless Chromium against a live API: per team and
per cluster, the slot-hours and GPU-hours the attempts held in the period in its address,
reached from the top navigation, and a period chosen from the list."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import sign_in
from tests.support.services import ADMIN_TOKEN, Stack, unique
from tests.support.usage import seed_attempts

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "studio"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(opened, stack.url, ADMIN_TOKEN)
    yield opened
    context.close()
    assert errors == [], f"console errors: {errors}"


def rows(page: Page, testid: str) -> list[list[str]]:
    table = page.get_by_test_id(testid)
    return [
        [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
        for row in table.locator("tbody tr").all()
    ]


def test_usage_per_team_and_cluster_for_the_period_in_the_address(page: Page, stack: Stack) -> None:
    cluster = unique("usage")
    stack.client().create_cluster(cluster, nodes=1)
    seed_attempts(stack, cluster, DAY)
    # Through the second day (a bare date ends the period with that whole day).
    query = urlencode({"since": DAY.date().isoformat(), "until": (DAY + timedelta(days=1)).date()})

    page.get_by_role("link", name="Usage").click()
    page.wait_for_url("**/usage")
    expect(page.get_by_role("heading", name="Usage")).to_be_visible()
    page.goto(f"{stack.url}/usage?{query}")

    teams = page.get_by_test_id("usage-teams")
    expect(teams).to_contain_text("vision")
    assert rows(page, "usage-teams") == [
        ["(no team)", "1", "18.0", "0.0"],
        ["nlp", "1", "5.0", "5.0"],
        ["vision", "2", "3.0", "6.0"],
        ["Total", "4", "26.0", "11.0"],
    ]
    assert [cluster, "4", "26.0", "11.0"] in rows(page, "usage-clusters")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)

    # A period from the list replaces the dates: ten days ago is outside the last 24 hours.
    page.get_by_label("Period").select_option("24h")
    page.wait_for_url("**/usage?since=24h")
    expect(teams).not_to_contain_text("vision")
