"""The Studio in a real headless Chromium against a live API, scheduler, Redis and workers.

Each test signs in through the login page, checks what a person would look at, saves a
screenshot under test-artifacts/studio/, and fails on any console error of the page.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Response, expect
from sqlmodel import Session, col, update

from api.studio.routes import STATIC
from runyard.client import Client
from runyard.core import Environment, Experiment, Run, Workspace
from store.db import make_engine
from store.models import Run as RunRow
from store.models import Team, TeamQuota
from tests.support.browser import chart_data, sign_in
from tests.support.environments import BUILT, report_as_a_worker
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
    """A browser with no session gets, for the clusters page and for one run's page, the
    same static file, and every call that file makes for data is refused: it ends on the
    login form having received nothing of anyone's."""
    admin = stack.client()
    admin.create_cluster(unique("shell"), nodes=1)
    run = admin.json("POST", "/runs/interactive", json={"experiment": unique("shell")})
    context = browser.new_context()
    anonymous = context.new_page()
    answers: list[Response] = []
    anonymous.on("response", lambda r: answers.append(r) if "/api/v1/" in r.url else None)
    # Each page and the call it makes first for its data.
    pages = {"/clusters": "/api/v1/clusters", f"/runs/{run['id']}": f"/api/v1/runs/{run['id']}"}
    for path, data in pages.items():
        with anonymous.expect_response(lambda r, data=data: urlsplit(r.url).path == data) as asked:
            shell = anonymous.goto(f"{stack.url}{path}")
        anonymous.wait_for_url(f"**/login?next={quote(path, safe='')}")
        expect(anonymous.get_by_label("API token")).to_be_visible()
        assert shell is not None and shell.body() == (STATIC / "index.html").read_bytes(), path
        assert asked.value.status == 401, path
    answered = {(urlsplit(r.url).path, r.status) for r in answers}
    assert {status for _, status in answered} == {401}, answered
    context.close()
    admin.cancel(run["id"])


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
    assert len(series["points"]) <= 1200, "a long series arrives downsampled"
    # The chart writes data-points once uPlot has drawn the series: from then on its
    # overlay takes the drag below.
    expect(page.get_by_test_id("chart-wave")).to_have_attribute(
        "data-points", str(len(series["points"]))
    )
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


# --- issue 13: the Studio's first hour -------------------------------------------------------


def start_logging(stack: Stack, experiment: str, tmp_path: Path, **kwargs: Any) -> Run:
    """An interactive run, as a notebook starts one (its outputs folder under tmp_path)."""
    outputs = tmp_path / unique("outputs")
    return Experiment(Workspace(url=stack.url), experiment).start_logging(
        outputs=str(outputs), **kwargs
    )


def numbers(labels: list[str]) -> list[float]:
    return [float(label.replace("k", "e3").replace("M", "e6")) for label in labels]


def test_compare_opens_on_the_latest_runs_with_the_first_series_chosen(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    experiment = unique("cmp")
    runs = []
    for n in range(3):
        run = start_logging(stack, experiment, tmp_path, display_name=f"trial {n}")
        run.log("lr", 0.1 * (n + 1))  # one value: not a series
        for step in range(4):
            run.log("loss", 1 / (step + n + 1))
            run.log("wer", 0.5 - step / 10)
        run.complete()
        runs.append(run)
    page.get_by_role("link", name="Compare").click()
    chart = page.get_by_test_id("compare-chart")
    expect(chart).to_have_attribute("data-points", "4")
    assert page.get_by_label("Metric").input_value() == "loss"  # the first series by name
    assert set(chart_data(page, "compare-chart", "series")) == {f"trial {n}" for n in range(3)}
    chosen = parse_qs(urlsplit(page.url).query)
    assert set(chosen["runs"][0].split(",")) == {r.id for r in runs}
    expect(page.get_by_test_id("finals").locator("tbody tr")).to_have_count(3)
    screenshot(page, "compare-first-view")
    page.get_by_label("log scale for compare-chart").check()  # the run page's controls too
    expect(chart).to_have_attribute("data-y-scale", "log")
    page.get_by_label("smoothing for compare-chart").fill("0.5")
    expect(chart).to_have_attribute("data-smoothing", "0.5")
    assert len(chart_data(page, "compare-chart", "series")) == 6  # each run, and smoothed


def test_axes_read_right_for_small_and_large_values_and_steps_are_whole(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    run = start_logging(stack, unique("axes"), tmp_path)
    for value in (2.6e-4, 4.1e-4, 5.4e-4):
        run.log("lr", value)
    for value in (1.2e6, 2.5e6, 3.4e6):
        run.log("tokens", value)
    run.flush()
    page.goto(f"{stack.url}/runs/{run.id}")
    expect(page.get_by_test_id("chart-lr")).to_have_attribute("data-points", "3")
    small = chart_data(page, "chart-lr", "y-ticks")
    assert len(small) >= 2 and len(set(small)) == len(small), small
    assert all(2e-4 <= v <= 6e-4 for v in numbers(small)), small  # never "0.001, 0, 0"
    large = chart_data(page, "chart-tokens", "y-ticks")
    assert all(label.endswith("M") for label in large), large
    assert all(1e6 <= v <= 4e6 for v in numbers(large)), large
    steps = chart_data(page, "chart-lr", "x-ticks")
    assert steps and all(label.isdigit() for label in steps), steps  # never 0.5, 1.5
    screenshot(page, "run-axes")
    run.complete()


def test_a_loss_tail_reads_on_a_log_scale_and_smoothing_draws_the_trend(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    run = start_logging(stack, unique("scale"), tmp_path)
    for step in range(100):
        run.log("loss", 10 ** (-step / 20))
        run.log("noisy", float(step % 2))
    run.flush()
    page.goto(f"{stack.url}/runs/{run.id}")
    loss = page.get_by_test_id("chart-loss")
    expect(loss).to_have_attribute("data-points", "100")
    assert "1e-4" not in chart_data(page, "chart-loss", "y-ticks")  # linear: the tail is flat
    page.get_by_label("log scale for chart-loss").check()
    expect(loss).to_have_attribute("data-y-scale", "log")
    decades = chart_data(page, "chart-loss", "y-ticks")
    assert {"1e-4", "1"} <= set(decades), decades  # decades apart, the tail readable
    assert all(label in ("1e-5", "1e-4", "0.001", "0.01", "0.1", "1") for label in decades)

    noisy = page.get_by_test_id("chart-noisy")
    expect(noisy).to_have_attribute("data-points", "100")
    page.get_by_label("smoothing for chart-noisy").fill("0.9")
    expect(noisy).to_have_attribute("data-smoothing", "0.9")
    assert chart_data(page, "chart-noisy", "series") == ["noisy", "noisy (smoothed)"]
    raw, smooth = chart_data(page, "chart-noisy", "last")
    assert raw == 1 and 0.4 < smooth < 0.6, (raw, smooth)
    screenshot(page, "run-log-scale-smoothing")
    run.complete()


def test_log_row_with_three_columns_charts_each_against_the_first_and_shows_a_table(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    run = start_logging(stack, unique("fit"), tmp_path)
    for epoch in range(130):
        run.log_row("fit", epoch=epoch, w=1 - math.exp(-epoch / 20), b=0.5 * math.exp(-epoch / 40))
    run.flush()
    page.goto(f"{stack.url}/runs/{run.id}")
    figure = page.locator('figure[data-metric="fit"]')
    expect(figure).to_contain_text("w, b against epoch")
    expect(page.get_by_test_id("chart-fit")).to_have_attribute("data-points", "130")
    assert chart_data(page, "chart-fit", "series") == ["w", "b"]  # b is not dropped
    table = page.get_by_test_id("table-fit")
    expect(table.locator("thead th")).to_have_text(["epoch", "w", "b"])
    expect(table.locator("tbody tr")).to_have_count(100)
    expect(page.get_by_test_id("more-fit")).to_have_text("30 more rows")
    screenshot(page, "run-row-table")
    run.complete()


def test_a_failed_run_leads_with_its_reason_and_the_end_of_its_traceback(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("crash")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "for i in range(300):\n    print('epoch', i)\n"
        "def train(lr):\n    raise ValueError(f'learning rate {lr} is out of range')\n"
        "train(7)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"boom.py": script}), "boom.py", cluster)
    run.wait_for_completion(raise_on_error=False)
    details = stack.client().get_run(run.id)
    assert details["status"] == "Failed"
    page.goto(f"{stack.url}/runs/{run.id}")
    verdict = page.get_by_test_id("verdict")
    expect(verdict.get_by_role("heading")).to_have_text("Failed")
    expect(verdict.get_by_test_id("reason")).to_have_text(details["failure_reason"])
    traceback = verdict.get_by_test_id("traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ValueError: learning rate 7 is out of range")
    assert "epoch 1\n" not in traceback.inner_text()  # the tail, not the whole log
    box = verdict.bounding_box()
    timeline = page.locator("#timeline-h").bounding_box()
    assert box and timeline and box["y"] < timeline["y"] and box["y"] < 300, (box, timeline)
    screenshot(page, "run-failed")


def test_a_run_that_never_started_says_why_instead_of_an_empty_log(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("idle")
    stack.client().create_cluster(cluster, nodes=1)  # and no worker
    run = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    reason = stack.client().get_run(run.id)["pending_reason"]
    assert reason
    page.goto(f"{stack.url}/runs/{run.id}")
    verdict = page.get_by_test_id("verdict")
    expect(verdict.get_by_role("heading")).to_have_text("Not started yet")
    expect(verdict.get_by_test_id("reason")).to_contain_text(reason)
    expect(page.get_by_test_id("log")).to_contain_text(f"not started yet — {reason}")
    screenshot(page, "run-waiting")
    stack.client().cancel(run.id)
    page.reload()
    expect(verdict.get_by_role("heading")).to_have_text("Canceled before it started")
    expect(page.get_by_test_id("log")).to_contain_text("Canceled before it started")


def test_files_show_as_a_table_with_readable_sizes(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    run = start_logging(stack, unique("files"), tmp_path)
    picture = tmp_path / "1.png"
    picture.write_bytes(b"\0" * 6321)
    run.upload_file("plots/1.png", str(picture))
    page.goto(f"{stack.url}/runs/{run.id}")
    table = page.get_by_test_id("files")
    expect(table.locator("thead th")).to_have_text(["Name", "Size", "Stored"])
    row = table.locator("tbody tr").first
    expect(row.locator("td").nth(0)).to_have_text("plots/1.png")
    expect(row.locator("td").nth(1)).to_have_text("6.2 KiB")
    link = row.get_by_role("link", name="plots/1.png")
    assert link.get_attribute("href") == f"/api/v1/runs/{run.id}/files/plots/1.png"
    screenshot(page, "run-files")
    run.complete()


def test_a_long_run_id_stays_on_one_line_on_a_phone(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    run = start_logging(stack, unique("a-rather-long-experiment-name-for-a-sweep"), tmp_path)
    phone = open_studio(browser, stack, width=390, height=844)
    phone.goto(f"{stack.url}/runs/{run.id}")
    for shown in (phone.get_by_role("heading", level=1), phone.get_by_test_id("run-id")):
        expect(shown).to_have_attribute("title", run.id)  # the whole id, on hover
        lines = shown.evaluate(
            "el => el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight)"
        )
        assert lines < 1.5, f"{run.id} wraps onto {lines:.1f} lines"
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width}px wide on a 390px screen"
    screenshot(phone, "run-long-id-phone")
    errors = phone.console_errors  # type: ignore[attr-defined]
    phone.context.close()
    run.complete()
    assert errors == []


def test_a_display_name_set_from_the_sdk_names_the_run_where_it_shows(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    experiment = unique("named")
    run = start_logging(stack, experiment, tmp_path)
    run.log("loss", 0.5)
    run.flush()
    page.goto(f"{stack.url}/runs/{run.id}")
    title = page.get_by_role("heading", level=1)
    expect(title).to_have_text(run.id)
    run.display_name = "baseline, lr 3e-4"  # stored when the setter returns
    expect(title).to_have_text("baseline, lr 3e-4")  # live, without a reload
    expect(page.get_by_test_id("run-id")).to_have_text(run.id)
    run.complete()
    page.goto(f"{stack.url}/experiments/{experiment}")
    link = page.get_by_test_id("runs").get_by_role("link", name="baseline, lr 3e-4")
    expect(link).to_have_attribute("title", f"baseline, lr 3e-4 ({run.id})")
    link.click()
    expect(title).to_have_text("baseline, lr 3e-4")
    screenshot(page, "run-display-name")


def test_an_experiment_charts_a_chosen_metric_across_its_runs(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    experiment = unique("across")
    for accuracy in (0.71, 0.84, 0.79):
        run = start_logging(stack, experiment, tmp_path)
        for step in range(3):
            run.log("accuracy", accuracy - (2 - step) / 10)
        run.log("loss", 1 - accuracy)
        run.complete()
    page.goto(f"{stack.url}/experiments/{experiment}")
    chart = page.get_by_test_id("across-chart")
    expect(chart).to_have_attribute("data-points", "3")
    assert page.get_by_label("Chart metric").input_value() == "accuracy"
    assert chart_data(page, "across-chart", "last") == [0.79]  # the latest run's last value
    assert all(label.isdigit() for label in chart_data(page, "across-chart", "x-ticks"))
    page.get_by_label("Chart metric").select_option("loss")
    expect(page.get_by_test_id("across-runs")).to_contain_text("loss")
    wait_until(
        lambda: chart_data(page, "across-chart", "last") == [pytest.approx(0.21)],
        10,
        0.1,
        what="the loss chart",
    )
    screenshot(page, "experiment-across-runs")


def test_a_cluster_shows_its_recent_history(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("history")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(tmp_path / "src", {"ok.py": "print('ok')\n", "bad.py": "raise SystemExit(3)\n"})
    good = submit(stack.url, folder, "ok.py", cluster)
    good.wait_for_completion()
    bad = submit(stack.url, folder, "bad.py", cluster)
    bad.wait_for_completion(raise_on_error=False)
    ended = stack.client().json("GET", f"/clusters/{cluster}/history")["data"]
    assert [r["id"] for r in ended] == [bad.id, good.id]  # the latest ending first
    page.goto(f"{stack.url}/clusters")
    history = page.locator(f'section[data-cluster="{cluster}"]').get_by_test_id("history")
    rows = history.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Failed")
    expect(rows.nth(0)).to_contain_text(ended[0]["failure_reason"])
    expect(rows.nth(1)).to_contain_text("Completed")
    screenshot(page, "clusters-history")


def test_a_clusters_history_refuses_bad_input_in_plain_words(stack: Stack) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    missing = httpx.get(f"{stack.url}/api/v1/clusters/nope-{unique('x')}/history", headers=headers)
    assert missing.status_code == 404 and "no cluster" in missing.json()["detail"]
    too_many = httpx.get(f"{stack.url}/api/v1/clusters/any/history?limit=5000", headers=headers)
    assert too_many.status_code == 422 and "less than or equal to 500" in too_many.json()["detail"]


def test_the_run_page_shows_the_environment_the_run_ran_with(
    page: Page, stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("envpage")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    plain = Environment("tiny")
    folder = write(tmp_path / "src", {"a.py": "print(1)\n"})
    ran = submit(stack.url, folder, "a.py", cluster, environment=plain)
    ran.wait_for_completion()

    page.goto(f"{stack.url}/runs/{ran.id}")
    section = page.get_by_test_id("environment")
    expect(section.get_by_role("heading")).to_have_text("Environment")
    expect(section.get_by_test_id("environment-name")).to_have_text("tiny")
    expect(section.get_by_test_id("environment-hash")).to_have_text("none")
    expect(section.get_by_test_id("environment-build")).to_have_text("nothing to build")
    expect(section.get_by_test_id("environment-packages")).to_contain_text("0 packages")

    # A run whose worker built its environment (reported as such a worker would).
    idle = unique("envidle")
    stack.client().create_cluster(idle, nodes=1)
    built = submit(stack.url, folder, "a.py", idle)
    report_as_a_worker(stack, built.id, BUILT)
    assert stack.client().get_run(built.id, fresh=True)["environment_used"] == BUILT
    page.goto(f"{stack.url}/runs/{built.id}")
    expect(section.get_by_test_id("environment-name")).to_have_text("sklearn:3")
    expect(section.get_by_test_id("environment-hash")).to_have_text(BUILT["hash"])
    expect(section.get_by_test_id("environment-build")).to_have_text("built in 13 s")
    packages = section.get_by_test_id("environment-packages")
    expect(packages.locator("summary")).to_have_text("3 packages")
    expect(packages.locator("li").first).to_be_hidden()  # folded until asked for
    packages.locator("summary").click()
    expect(packages.locator("li")).to_have_text(BUILT["packages"])
    screenshot(page, "run-environment")
    stack.client().cancel(built.id)


def test_a_cluster_shared_by_teams_shows_each_team_and_a_preempted_run_says_why(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """The clusters page shows a table per cluster with quotas: each team's use against its
    quota, borrowed, lent and waiting; a preempted run's page says for whom and why."""
    cluster = unique("teams")
    stack.client().create_cluster(cluster, nodes=2)  # and no worker: the runs wait
    run = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    vision, nlp = unique("vision"), unique("nlp")
    reason = f"reclaimed by team {nlp} (0/1 slots of its quota in use)"
    engine = make_engine(f"sqlite:///{stack.root / 'data' / 'runyard.db'}")
    try:
        with Session(engine) as session:
            for team in (vision, nlp):
                session.add(Team(name=team))
                session.flush()
                session.add(TeamQuota(cluster=cluster, team=team, slots=1))
            session.execute(
                update(RunRow)
                .where(col(RunRow.id) == run.id)
                .values(
                    team=vision, preemptions=1, preempted_by="mnist_1_x", preemption_reason=reason
                )
            )
            session.commit()
    finally:
        engine.dispose()

    page.goto(f"{stack.url}/clusters")
    teams = page.locator(f'section[data-cluster="{cluster}"]').get_by_test_id("teams")
    row = teams.locator(f'tr[data-team="{vision}"]')
    expect(row.get_by_test_id("team-used")).to_have_text("0 / 1")
    expect(row.get_by_test_id("team-waiting")).to_have_text("1")
    expect(teams.locator(f'tr[data-team="{nlp}"]').get_by_test_id("team-lent")).to_have_text("0")
    screenshot(page, "cluster-teams")
    page.goto(f"{stack.url}/runs/{run.id}")
    expect(page.get_by_test_id("team")).to_have_text(vision)
    expect(page.get_by_test_id("preempted")).to_have_text(f"1 time(s) for run mnist_1_x: {reason}")
    stack.client().cancel(run.id)


def test_a_queue_longer_than_a_page_pages_through_with_positions_from_the_head(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """105 queued runs: the clusters page shows the first 100 (positions 1-100), Next shows
    the rest (101-105) and Previous goes back; the queue's count is all 105."""
    cluster = unique("long")
    stack.client().create_cluster(cluster, nodes=1)
    own = Client(stack.url, stack.make_token("member"))  # its own submit budget
    first = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    digest = stack.client().get_run(first.id)["snapshot_digest"]
    spec = {"experiment": "paging", "cluster": cluster, "script": "a.py", "snapshot_digest": digest}
    for _ in range(104):
        own.submit(spec)
    page.goto(f"{stack.url}/clusters")
    card = page.locator(f'section[data-cluster="{cluster}"]')
    queue = card.get_by_test_id("queue")
    expect(queue.locator("caption")).to_contain_text("Queue (105)")
    expect(queue.locator("tbody tr")).to_have_count(100)
    expect(card.get_by_test_id("queue-range")).to_have_text("positions 1\u2013100")

    card.get_by_role("button", name=f"next page of {cluster}'s queue").click()

    expect(queue.locator("tbody tr")).to_have_count(5)
    expect(card.get_by_test_id("queue-range")).to_have_text("positions 101\u2013105")
    expect(queue.locator("tbody tr").first.locator("td").nth(1)).to_have_text("101")
    card.get_by_role("button", name=f"previous page of {cluster}'s queue").click()
    expect(card.get_by_test_id("queue-range")).to_have_text("positions 1\u2013100")
    page.screenshot(path=str(ARTIFACTS / "queue-pages.png"))
    assert page.console_errors == []  # type: ignore[attr-defined]
    stack.client().cancel_queued(cluster)


def test_the_clusters_page_pages_through_the_clusters(page: Page, stack: Stack) -> None:
    """More clusters than a page (50): the clusters page shows one page of them by name,
    Next reaches the last one and Previous goes back. These sort after every other test's
    clusters ("zz-"), so no other card moves off the first page."""
    prefix = unique("zz")
    made = [f"{prefix}-{i:02d}" for i in range(51)]
    client = stack.client()
    for name in made:
        client.create_cluster(name, nodes=1)
    names = sorted(c["name"] for c in client.list_clusters())
    last_page = names.index(made[-1]) // 50
    try:
        page.goto(f"{stack.url}/clusters")
        cards = page.locator("section.cluster")
        range_ = page.get_by_test_id("clusters-pager-range")
        expect(range_).to_have_text(f"showing 1\u2013{min(50, len(names))} of {len(names)}")
        expect(cards).to_have_count(50)
        for turn in range(1, last_page + 1):
            page.get_by_role("button", name="next page of clusters").click()
            shown = f"showing {turn * 50 + 1}\u2013{min((turn + 1) * 50, len(names))}"
            expect(range_).to_have_text(f"{shown} of {len(names)}")
        expect(page.locator(f'section[data-cluster="{made[-1]}"]')).to_be_visible()
        expect(page.get_by_role("button", name="next page of clusters")).to_be_disabled()
        page.get_by_role("button", name="previous page of clusters").click()
        expect(cards).to_have_count(50)
        assert page.console_errors == []  # type: ignore[attr-defined]
    finally:
        page.goto("about:blank")  # stop its polling before its clusters go
        for name in made:
            client.delete_cluster(name)


def uploaded(stack: Stack, tmp_path: Path, experiment: str) -> tuple[str, dict[str, Any], Client]:
    """One run queued on a new cluster without workers (so runs there stay put), the spec
    that submits more like it without another upload, and a client with its own budget."""
    cluster = unique("pages")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"a.py": "print(1)\n"})
    first = submit(stack.url, folder, "a.py", cluster, experiment=experiment)
    digest = stack.client().get_run(first.id)["snapshot_digest"]
    spec = {
        "experiment": experiment,
        "cluster": cluster,
        "script": "a.py",
        "snapshot_digest": digest,
    }
    return first.id, spec, Client(stack.url, stack.make_token("member"))


def shown_runs(table: Any) -> list[str]:
    """The run ids a runs table shows, read off its rows' select boxes."""
    labels = table.locator("tbody tr input[type=checkbox]").evaluate_all(
        "boxes => boxes.map(b => b.getAttribute('aria-label'))"
    )
    return [label.removeprefix("select ") for label in labels]


def test_an_experiment_with_more_runs_than_a_page_pages_through_every_run_once(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """105 runs: the experiment's table shows 100 (1-100 of 105), Next shows the other 5,
    every run exactly once, and Previous goes back to the first page."""
    experiment = unique("paged")
    first_id, spec, own = uploaded(stack, tmp_path, experiment)
    ids = [first_id] + [own.submit(spec)["id"] for _ in range(104)]
    page.goto(f"{stack.url}/experiments/{quote(experiment)}")
    table = page.get_by_test_id("runs")
    expect(table.locator("tbody tr")).to_have_count(100)
    expect(page.get_by_test_id("runs-pager-range")).to_have_text("showing 1\u2013100 of 105")
    first = shown_runs(table)

    page.get_by_role("button", name=f"next page of {experiment}'s runs").click()

    expect(page.get_by_test_id("runs-pager-range")).to_have_text("showing 101\u2013105 of 105")
    expect(table.locator("tbody tr")).to_have_count(5)
    second = shown_runs(table)
    assert len(first + second) == 105
    assert sorted(first + second) == sorted(ids)
    assert second == list(reversed(ids[:5]))  # newest first: the oldest five come last
    expect(page.get_by_role("button", name=f"next page of {experiment}'s runs")).to_be_disabled()
    screenshot(page, "experiment-pages")
    page.get_by_role("button", name=f"previous page of {experiment}'s runs").click()
    expect(page.get_by_test_id("runs-pager-range")).to_have_text("showing 1\u2013100 of 105")
    assert shown_runs(table) == first
    stack.client().cancel_queued(spec["cluster"])


def test_an_experiments_filters_find_runs_beyond_the_page_shown(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """105 runs, the 3 oldest canceled (not on the first page): filtering the table by
    status asks the API, so it shows those 3 and the pager counts the matches."""
    experiment = unique("filtered")
    first_id, spec, own = uploaded(stack, tmp_path, experiment)
    ids = [first_id] + [own.submit(spec)["id"] for _ in range(104)]
    for run_id in ids[:3]:
        stack.client().cancel(run_id)
    page.goto(f"{stack.url}/experiments/{quote(experiment)}")
    table = page.get_by_test_id("runs")
    expect(page.get_by_test_id("runs-pager-range")).to_have_text("showing 1\u2013100 of 105")
    assert not set(ids[:3]) & set(shown_runs(table))

    page.get_by_label("Status").select_option("Canceled")

    expect(table.locator("tbody tr")).to_have_count(3)
    assert sorted(shown_runs(table)) == sorted(ids[:3])
    expect(page.get_by_test_id("runs-pager")).to_have_count(0)  # all on one page
    page.get_by_label("Status").select_option("")
    expect(table.locator("tbody tr")).to_have_count(100)
    assert page.console_errors == []  # type: ignore[attr-defined]
    stack.client().cancel_queued(spec["cluster"])


def test_a_run_with_more_children_than_a_page_pages_through_them(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """A parent with 102 child runs: its page lists 100 (1-100 of 102), Next the other 2,
    each child once."""
    experiment = unique("family")
    parent, spec, own = uploaded(stack, tmp_path, experiment)
    children = [own.submit({**spec, "parent_run_id": parent})["id"] for _ in range(102)]
    page.goto(f"{stack.url}/runs/{quote(parent)}")
    table = page.get_by_test_id("children")
    expect(table.locator("tbody tr")).to_have_count(100)
    expect(page.get_by_test_id("children-pager-range")).to_have_text("showing 1\u2013100 of 102")
    first = table.locator("tbody tr a").evaluate_all("links => links.map(a => a.textContent)")

    page.get_by_role("button", name="next page of child runs").click()

    expect(page.get_by_test_id("children-pager-range")).to_have_text("showing 101\u2013102 of 102")
    expect(table.locator("tbody tr")).to_have_count(2)
    second = table.locator("tbody tr a").evaluate_all("links => links.map(a => a.textContent)")
    assert sorted(first + second) == sorted(children)
    screenshot(page, "children-pages")
    stack.client().cancel_queued(spec["cluster"])
