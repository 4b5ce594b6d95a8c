"""The Studio in a real headless Chromium against a live API, scheduler, Redis and workers.

Each test signs in through the login page, checks what a person would look at, saves a
screenshot under test-artifacts/studio/, and fails on any console error of the page.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.browser import launch, sign_in
from tests.support.runs import submit, write
from tests.support.services import ADMIN_TOKEN, Stack, unique, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "studio"


def tiny_png() -> str:
    """A 2x2 red PNG, base64: what a run writes and logs with log_image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2)))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    return base64.b64encode(png + chunk(b"IEND", b"")).decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


def open_studio(browser: Browser, stack: Stack, width: int = 1280, height: int = 800) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda m: page.console_errors.append(m.text) if m.type == "error" else None,  # type: ignore[attr-defined]
    )
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))  # type: ignore[attr-defined]
    sign_in(page, stack.url, ADMIN_TOKEN)
    return page


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    opened = open_studio(browser, stack)
    yield opened
    errors = opened.console_errors  # type: ignore[attr-defined]
    opened.context.close()
    assert errors == [], f"console errors: {errors}"


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def points(page: Page, testid: str) -> int:
    found = page.locator(f'[data-testid="{testid}"]')
    if found.count() == 0:
        return 0
    return int(found.first.get_attribute("data-points") or 0)


def test_a_pages_shell_holds_nothing_without_a_session(stack: Stack, browser: Browser) -> None:
    context = browser.new_context()
    anonymous = context.new_page()
    anonymous.goto(f"{stack.url}/clusters")
    anonymous.wait_for_url("**/login?next=%2Fclusters")
    expect(anonymous.get_by_label("API token")).to_be_visible()
    context.close()


def test_a_metric_logged_in_a_loop_draws_itself_live(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("live")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import math, time\nfrom runyard.core import Run\nrun = Run.get_context()\n"
        "for step in range(100):\n"
        "    run.log('loss', math.exp(-step / 30))\n"
        "    time.sleep(0.12)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"train.py": script}), "train.py", cluster)
    page.goto(f"{stack.url}/runs/{run.id}")
    wait_until(lambda: points(page, "chart-loss") >= 2, 30, 0.1, what="the first points")
    early = points(page, "chart-loss")
    expect(page.get_by_test_id("run-status")).to_have_text("Running")
    wait_until(lambda: points(page, "chart-loss") >= early + 10, 30, 0.1, what="more points")
    assert stack.client().get_run(run.id)["status"] == "Running"  # drawn while it runs
    screenshot(page, "run-live")
    expect(page.get_by_test_id("run-status")).to_have_text("Completed", timeout=60_000)
    wait_until(lambda: points(page, "chart-loss") == 100, 20, 0.1, what="all 100 points")
    expect(page.get_by_test_id("log")).to_be_visible()
    screenshot(page, "run-completed")


def test_the_clusters_page_cancels_a_queued_run(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("queue")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster, slots=1)
    flag = tmp_path / "release"
    folder = write(
        tmp_path / "src",
        {
            "hold.py": (
                f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.1)\n"
            ),
            "quick.py": "print('done')\n",
        },
    )
    held = submit(stack.url, folder, "hold.py", cluster)
    wait_until(
        lambda: stack.client().get_run(held.id)["status"] == "Running", 30, what="the held run"
    )
    first = submit(stack.url, folder, "quick.py", cluster)
    second = submit(stack.url, folder, "quick.py", cluster)
    try:
        page.goto(f"{stack.url}/clusters")
        card = page.locator(f'section[data-cluster="{cluster}"]')
        expect(card.get_by_test_id("busy")).to_have_text("1")
        queue = card.get_by_test_id("queue")
        expect(queue.locator("tbody tr")).to_have_count(2)
        expect(card.get_by_test_id("active").locator(f'tr[data-run="{held.id}"]')).to_be_visible()
        screenshot(page, "clusters")
        page.once("dialog", lambda dialog: dialog.accept())
        queue.get_by_role("button", name=f"cancel {first.id}").click()
        expect(queue.locator(f'tr[data-run="{first.id}"]')).to_have_count(0)
        expect(queue.locator("tbody tr")).to_have_count(1)
        assert stack.client().get_run(first.id)["status"] == "Canceled"
        # Moving the other one to the front keeps it queued and first.
        queue.get_by_role("button", name=f"move {second.id} to front").click()
        wait_until(lambda: stack.client().get_run(second.id)["priority"] >= 1, 10, what="priority")
        screenshot(page, "clusters-after-cancel")
    finally:
        flag.touch()
    wait_until(
        lambda: stack.client().get_run(second.id)["status"] == "Completed", 60, what="second"
    )


def test_a_cluster_with_queued_runs_and_no_worker_is_flagged(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("orphan")
    stack.client().create_cluster(cluster, nodes=1)
    submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    page.goto(f"{stack.url}/clusters")
    card = page.locator(f'section[data-cluster="{cluster}"]')
    expect(card.get_by_test_id("no-worker")).to_be_visible()
    stack.client().cancel_queued(cluster)


def test_log_row_draws_a_two_variable_chart_and_log_image_shows(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("shapes")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import base64\nfrom runyard.core import Run\nrun = Run.get_context()\n"
        "for alpha in [0.1, 0.2, 0.4, 0.8, 1.6]:\n"
        "    run.log_row('curve', alpha=alpha, mse=1 / (1 + alpha))\n"
        "run.log('final_mse', 0.38)\n"
        "run.log_table('grid', {'kernel': ['rbf', 'linear'], 'score': [0.9, 0.8]})\n"
        f"open('sample.png', 'wb').write(base64.b64decode({tiny_png()!r}))\n"
        "run.log_image('sample', path='sample.png')\n"
        "run.tag('team', 'vision')\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"shapes.py": script}), "shapes.py", cluster)
    run.wait_for_completion()
    assert run.get_status() == "Completed"
    page.goto(f"{stack.url}/runs/{run.id}")
    curve = page.locator('figure[data-metric="curve"]')
    expect(curve).to_contain_text("mse against alpha")
    wait_until(lambda: points(page, "chart-curve") == 5, 20, 0.1, what="the row chart")
    expect(page.get_by_test_id("value-final_mse")).to_have_text("0.380000")
    expect(page.get_by_test_id("table-grid")).to_contain_text("rbf")
    image = page.get_by_test_id("image-sample").first
    expect(image).to_be_visible()
    wait_until(
        lambda: image.evaluate("img => img.complete && img.naturalWidth") == 2, 20, what="image"
    )
    expect(page.get_by_text("team")).to_be_visible()
    screenshot(page, "run-shapes")


def test_experiments_sort_filter_and_compare_a_sweep(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("sweep")
    experiment = unique("sweep")
    stack.client().create_cluster(cluster, nodes=3)
    workers.start(cluster, slots=3)
    script = (
        "import sys\nfrom runyard.core import Run\nrun = Run.get_context()\n"
        "alpha = float(sys.argv[1])\nrun.log('alpha', alpha)\n"
        "for step in range(5):\n    run.log('mse', (1 + alpha) / (step + 1))\n"
    )
    folder = write(tmp_path / "src", {"fit.py": script})
    runs = [
        submit(stack.url, folder, "fit.py", cluster, str(a), experiment=experiment)
        for a in (0.5, 1.0, 2.0)
    ]
    for run in runs:
        run.wait_for_completion()
    page.goto(f"{stack.url}/experiments")
    page.get_by_role("link", name=experiment).click()
    table = page.get_by_test_id("runs")
    expect(table.locator("tbody tr")).to_have_count(3)
    table.get_by_role("button", name="alpha").click()  # sort by alpha, ascending
    expect(table.locator("tbody tr").first).to_contain_text("0.500000")
    page.get_by_label("Status").select_option("Completed")
    expect(table.locator("tbody tr")).to_have_count(3)
    screenshot(page, "experiment")
    for run in runs:
        table.get_by_label(f"select {run.id}").check()
    page.get_by_role("button", name="Compare selected (3)").click()
    page.get_by_label("Metric").select_option("mse")
    expect(page.get_by_test_id("compare-chart")).to_be_visible()
    page.get_by_label("Against").select_option("alpha")
    wait_until(lambda: points(page, "compare-chart") == 3, 20, 0.1, what="mse against alpha")
    expect(page.get_by_test_id("finals").locator("tbody tr")).to_have_count(3)
    screenshot(page, "compare")


def test_the_run_page_reads_on_a_phone(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    admin = stack.client()
    run = admin.json("POST", "/runs/interactive", json={"experiment": "phone"})
    phone = open_studio(browser, stack, width=390, height=844)
    phone.goto(f"{stack.url}/runs/{run['id']}")
    expect(phone.get_by_test_id("run-status")).to_have_text("Running")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width}px wide on a 390px screen"
    screenshot(phone, "run-phone")
    phone.keyboard.press("Tab")  # the first stop is a real, visible control
    focused = phone.evaluate("document.activeElement.tagName")
    assert focused in ("A", "BUTTON")
    errors = phone.console_errors  # type: ignore[attr-defined]
    phone.context.close()
    admin.cancel(run["id"])
    assert errors == []


def test_every_asset_comes_from_the_api_itself(stack: Stack) -> None:
    """No CDN: the shell names only /studio/static assets, shipped in the package."""
    import re

    import httpx

    shell = httpx.get(f"{stack.url}/runs/anything", timeout=10)
    assert shell.status_code == 200
    assert "frame-ancestors" in shell.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', shell.text)
    assert assets and all(a.startswith("/studio/static/") or a == "data:," for a in assets)
    for asset in assets:
        if asset.startswith("/"):
            body = httpx.get(f"{stack.url}{asset}", timeout=10)
            assert body.status_code == 200, asset
            assert not re.search(r"https?://(?!www\.w3\.org)[a-z0-9.-]+/", body.text), asset


def test_a_long_series_comes_downsampled_and_refines_on_zoom(page: Page, stack: Stack) -> None:
    admin = stack.client()
    run = admin.json("POST", "/runs/interactive", json={"experiment": "zoom"})
    values = [float(i % 1000) for i in range(20_000)]
    values[12_345] = 99_999.0  # a spike the downsampling must keep
    event = {"k": "l", "r": run["id"], "n": "wave", "v": values}
    batch = {"producer": "t", "first_seq": 0, "events": [event], "wait": True}
    admin.json("POST", f"/runs/{run['id']}/events", json=batch)
    names = admin.json("GET", f"/runs/{run['id']}/metric-names")["data"]
    assert [m["count"] for m in names] == [20_000]  # stored when the post with wait returned
    with page.expect_response(lambda r: "/history" in r.url) as first:
        page.goto(f"{stack.url}/runs/{run['id']}")
    series = first.value.json()
    wait_until(lambda: points(page, "chart-wave") > 0, 20, 0.1, what="the chart")
    coarse = points(page, "chart-wave")
    assert coarse <= 1200, "a long series arrives downsampled"
    assert page.get_by_text("downsampled").is_visible()
    assert max(p[1] for p in series["points"]) == 99_999.0  # the spike survives
    chart = page.get_by_test_id("chart-wave").locator(".u-over")
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2, steps=5)
    # Waited for through Playwright: its sync API hands a page's events to Python only while
    # a Playwright call runs, so a list filled by page.on("request") and polled with
    # time.sleep never sees a request sent after the last call.
    with page.expect_response(
        lambda r: "/history" in r.url and "start=" in r.url, timeout=10_000
    ) as refined:
        page.mouse.up()
    expect(page.get_by_role("button", name="Reset zoom")).to_be_visible()
    query = parse_qs(urlsplit(refined.value.url).query)
    start, end = int(query["start"][0]), int(query["end"][0])
    # The drag over 40%..45% of the chart asks for those steps of 0..19,999 (to within the
    # rounding of the mouse to whole pixels), fewer than MAX_POINTS: every step of them
    # comes back, and the chart draws them all.
    pixel = 20_000 / box["width"]
    assert abs(start - 8_000) <= 1.5 * pixel and abs(end - 9_000) <= 1.5 * pixel, (start, end)
    finer = refined.value.json()["points"]
    assert [p[0] for p in finer] == list(range(start, end + 1))
    expect(page.get_by_test_id("chart-wave")).to_have_attribute("data-points", str(len(finer)))
    screenshot(page, "run-zoomed")
    admin.cancel(run["id"])


def test_a_cross_site_form_cannot_act_with_a_studio_session(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    """A page on another site that posts a form to the API, in the browser of a signed-in
    person: the run it targets stays queued."""
    import http.server
    import threading

    cluster = unique("csrf")
    stack.client().create_cluster(cluster, nodes=1)
    target = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "index.html").write_text(
        f'<form id="f" method="post" action="{stack.url}/api/v1/runs/{target.id}/cancel">'
        "</form><script>document.getElementById('f').submit()</script>"
    )
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(evil))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = open_studio(browser, stack)  # signed in: the session cookie is in this browser
    try:
        with page.expect_response(lambda r: "/cancel" in r.url) as answer:
            page.goto(f"http://127.0.0.2:{server.server_address[1]}/index.html")
        assert answer.value.status in (401, 403)
    finally:
        page.context.close()
        server.shutdown()
    assert stack.client().get_run(target.id)["status"] == "Queued"
    stack.client().cancel(target.id)
