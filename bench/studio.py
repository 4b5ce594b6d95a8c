"""Studio benchmark: a run page whose metric holds a million points, in a real browser.

    python -m bench.studio [--points 1000000] [--repeat 5]

Starts a private Redis, the Runyard API and scheduler (SQLite), logs ``--points`` values
of one series through the public API (an interactive run, ``log_list`` batches), then
opens the run page in headless Chromium (Debian's ``chromium`` driven by Playwright) and
measures, per load:

- time to first chart paint: from the start of navigation until the chart's canvas holds
  the series (uPlot draws synchronously when it gets data; one animation frame later),
  and the time of the series request alone;
- bytes transferred: the page, its assets, and the API responses (``transferSize`` of
  every resource the page fetched), and of the series request alone;
- whether the series' extremes (a spike of +1000 and a dip of -1000 among values in
  [-1, 1]) survive the downsampling.

The first load is cold (browser cache disabled: page and assets fetched again); the rest
are reloads with the cache on. Not a
test: it asserts nothing about speed. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.figures import Figure
from runyard.client import Client
from tests.support.browser import launch, sign_in
from tests.support.services import ADMIN_TOKEN, Stack, redis_server, wait_until

METRIC = "signal"
CHUNK = 20_000
SPIKE, DIP = 1000.0, -1000.0


def series(n: int) -> list[float]:
    values = [math.sin(i / 5000) for i in range(n)]
    values[int(n * 0.654321)] = SPIKE
    values[int(n * 0.222222)] = DIP
    return values


def fill(client: Client, points: int) -> str:
    """An interactive run holding ``points`` values of METRIC, stored (not just queued)."""
    run = client.start_interactive("studio-bench")
    run_client = Client(client.base_url, run["run_token"])
    values = series(points)
    started = time.perf_counter()
    for seq, first in enumerate(range(0, points, CHUNK)):
        event = {"k": "l", "r": run["id"], "n": METRIC, "v": values[first : first + CHUNK]}
        batch = {"producer": "bench", "first_seq": seq, "events": [event]}
        run_client.send_events(run["id"], batch)

    def stored() -> bool:
        names = client.metric_names(run["id"])
        return bool(names) and names[0]["count"] == points

    wait_until(stored, 1800, 1.0, what=f"{points} points stored")
    print(f"stored {points:,} points in {time.perf_counter() - started:.1f} s", flush=True)
    return run["id"]


def measure(page: Any, url: str) -> dict[str, Any]:
    history: list[dict[str, Any]] = []

    def on_response(response: Any) -> None:
        if f"/metrics/{METRIC}/history" in response.url:
            history.append(response.json())

    page.on("response", on_response)
    page.goto(url, wait_until="commit")
    page.wait_for_function(
        f"""() => {{
            const chart = document.querySelector('[data-testid="chart-{METRIC}"]');
            return chart && Number(chart.dataset.points) > 0 && chart.querySelector('canvas');
        }}""",
        timeout=120_000,
    )
    painted = page.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => done(performance.now())))"
    )
    entries = page.evaluate(
        """() => performance.getEntries()
            .filter(e => e.entryType === 'navigation' || e.entryType === 'resource')
            .map(e => ({name: e.name, size: e.transferSize || 0, body: e.encodedBodySize || 0,
                        ms: e.responseEnd - e.startTime}))"""
    )
    page.remove_listener("response", on_response)
    series_bytes = sum(e["body"] for e in entries if f"/metrics/{METRIC}/history" in e["name"])
    values = [p[1] for r in history for p in r["points"] if isinstance(p[1], int | float)]
    series_ms = [e["ms"] for e in entries if f"/metrics/{METRIC}/history" in e["name"]]
    return {
        "paint_ms": painted,
        "series_ms": series_ms[0] if series_ms else float("nan"),
        "bytes": sum(e["size"] for e in entries),
        "series_bytes": series_bytes,
        "points_drawn": len(values),
        "extremes": (min(values), max(values)) if values else (None, None),
    }


def measure_loads(points: int, repeat: int) -> list[dict[str, Any]]:
    """One cold load then ``repeat - 1`` reloads of a run page holding ``points`` values."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="runyard-bench-studio-") as folder:
        root = Path(folder)
        with redis_server(root / "redis") as redis:
            stack = Stack(root=root / "stack", redis=redis)
            stack.start()
            try:
                run_id = fill(stack.client(), points)
                with sync_playwright() as playwright:
                    browser = launch(playwright)
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    page = context.new_page()
                    sign_in(page, stack.url, ADMIN_TOKEN)
                    url = f"{stack.url}/runs/{run_id}"
                    # Cold: nothing cached (the sign-in page fetched the assets already).
                    devtools = context.new_cdp_session(page)
                    devtools.send("Network.enable")
                    devtools.send("Network.setCacheDisabled", {"cacheDisabled": True})
                    results = [measure(page, url)]
                    devtools.send("Network.setCacheDisabled", {"cacheDisabled": False})
                    results += [measure(page, url) for _ in range(repeat - 1)]
                    browser.close()
            finally:
                stack.stop()
    return results


def figures(quick: bool = False) -> list[Figure]:
    """Rows for ``python -m bench``: first chart paint, cold and on reload."""
    points, repeat = (100_000, 2) if quick else (1_000_000, 5)
    results = measure_loads(points, repeat)
    cold, warm = results[0], results[1:] or results
    note = f"one series of {points:,} points, Chromium 1280x800"
    reload = statistics.median(r["paint_ms"] for r in warm)
    return [
        Figure("Studio run page first chart paint, cold", cold["paint_ms"], "ms", note=note),
        Figure(
            f"Studio run page first chart paint, reload p50 (n={len(warm)})",
            reload,
            "ms",
            note=note,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = measure_loads(args.points, args.repeat)
    cold, warm = results[0], results[1:] or results
    print(f"\nrun page, one series of {args.points:,} points, Chromium 1280x800")
    print(f"  first chart paint, cold load     {cold['paint_ms']:8.0f} ms")
    paints = [r["paint_ms"] for r in warm]
    print(f"  first chart paint, reload (n={len(warm)}) p50 {statistics.median(paints):4.0f} ms, "
          f"max {max(paints):.0f} ms")  # fmt: skip
    print(f"  bytes transferred, cold load     {cold['bytes']:8,} B (page, assets, API)")
    print(f"  bytes transferred, reload        {warm[0]['bytes']:8,} B")
    series = statistics.median(r["series_ms"] for r in results)
    print(f"  series request (history), p50     {series:8.0f} ms")
    print(f"  series response body             {cold['series_bytes']:8,} B "
          f"for {cold['points_drawn']:,} points drawn")  # fmt: skip
    low, high = cold["extremes"]
    kept = low == DIP and high == SPIKE
    print(f"  extremes kept                    {'yes' if kept else 'NO'} (min {low}, max {high})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
