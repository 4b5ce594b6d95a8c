"""RunDetails and its parts: the view built from API answers, its HTML and text, the live
feed against a fake service (httpx's MockTransport), and the panel's close."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from runyard.widgets import RunDetails
from runyard.widgets.feed import LiveFeed
from runyard.widgets.render import as_text, chart_svg, metrics_html, page_html, status_html
from runyard.widgets.view import RunView

URL = "http://127.0.0.1:8642/runs/e_1_ab"


def names(*entries: tuple[str, str, int, Any]) -> dict[str, Any]:
    data = [{"name": n, "kind": k, "count": c, **({"last": v} if v is not None else {})}
            for n, k, c, v in entries]  # fmt: skip
    return {"data": data, "count": len(data)}


def view_of(status: str = "Running", **run: Any) -> RunView:
    return RunView("e_1_ab", URL).with_run({"status": status, **run})


# --- the view and its HTML -----------------------------------------------------------------


def test_a_failed_run_leads_with_its_reason() -> None:
    markup = status_html(view_of("Failed", failure_reason="script exited with code 1"))
    assert 'data-testid="run-status"' in markup and ">Failed</span>" in markup
    assert '<span data-testid="run-reason">script exited with code 1</span>' in markup


def test_a_queued_run_says_why_it_waits_and_a_running_one_shows_no_old_reason() -> None:
    queued = view_of("Queued", pending_reason="all 1 node(s) busy", failure_reason="old")
    assert queued.reason == "all 1 node(s) busy"
    assert view_of("Running", pending_reason="all 1 node(s) busy").reason is None


def test_the_table_shows_the_latest_value_of_each_metric() -> None:
    view = view_of().with_names(
        names(("loss", "scalar", 3, 0.000261), ("fit", "row", 4, None), ("name", "scalar", 1, "a"))
    )
    table = metrics_html(view)
    assert '<td class="value" data-testid="value-loss">0.000261</td>' in table
    assert '<td class="value" data-testid="value-fit">4 rows</td>' in table
    assert '<td class="value" data-testid="value-name">a</td>' in table
    assert view.charted == ("loss",)  # a series of numbers; one value or rows are not drawn


def test_a_chart_draws_every_finite_point_of_its_series() -> None:
    view = view_of().with_names(names(("loss", "scalar", 4, 0.1)))
    view = view.with_history("loss", {"points": [[0, 1.0], [1, "NaN"], [2, 0.5], [3, 0.1]]})
    assert view.charts["loss"] == ((0.0, 1.0), (2.0, 0.5), (3.0, 0.1))
    svg = chart_svg("loss", view.charts["loss"])
    assert 'data-points="3"' in svg
    polyline = svg.split("<polyline")[1].split('points="')[1].split('"')[0].split()
    assert len(polyline) == 3
    assert polyline[0].startswith("56.0,") and polyline[-1].startswith("310.0,")


def test_what_a_run_logged_is_escaped() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    view = view_of("Failed", failure_reason=hostile).with_names(names((hostile, "scalar", 2, 1)))
    view = view.with_history(hostile, {"points": [[0, 1], [1, 2]]})
    markup = page_html(view)
    assert "<img" not in markup and "&lt;img src=x onerror=alert(1)&gt;" in markup


def test_the_text_gives_status_reason_latest_values_and_the_studio_page() -> None:
    view = view_of("Failed", failure_reason="boom").with_names(names(("mse", "scalar", 20, 3.5)))
    assert as_text(view) == (
        f"Run e_1_ab: Failed (boom)\n  mse: 3.5 (last of 20)\nWatch it live: {URL}"
    )


# --- RunDetails outside a notebook ---------------------------------------------------------


class FakeClient:
    """The SDK client's ``json`` over canned answers, keyed by path."""

    base_url = "http://127.0.0.1:8642"
    headers = {"Authorization": "Bearer ryt_test"}

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def json(self, method: str, path: str, **_: Any) -> Any:
        return self.answers[path]


def fake_run(answers: dict[str, Any]) -> Any:
    workspace = SimpleNamespace(client=FakeClient(answers))
    return SimpleNamespace(
        id="e_1_ab", experiment=SimpleNamespace(workspace=workspace), get_portal_url=lambda: URL
    )


ANSWERS = {
    "/runs/e_1_ab": {"status": "Completed"},
    "/runs/e_1_ab/metric-names": names(("loss", "scalar", 2, 0.25)),
    "/runs/e_1_ab/metrics/loss/history": {"points": [[0, 0.5], [1, 0.25]]},
}


def test_show_outside_a_notebook_prints_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    RunDetails(fake_run(ANSWERS)).show()
    assert capsys.readouterr().out == (
        f"Run e_1_ab: Completed\n  loss: 0.25 (last of 2)\nWatch it live: {URL}\n"
    )


def test_get_widget_data_and_the_static_html_hold_no_frame_and_no_token() -> None:
    details = RunDetails(fake_run(ANSWERS))
    assert details.get_widget_data() == {
        "run_id": "e_1_ab", "url": URL, "status": "Completed", "reason": None,
        "metrics": {"loss": 0.25},
    }  # fmt: skip
    markup = details._repr_html_()
    assert "<iframe" not in markup and "ryt_test" not in markup
    assert 'data-points="2"' in markup and f'href="{URL}"' in markup


# --- the live feed against a fake service --------------------------------------------------


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeService:
    """The API's reads over ``state``; the event stream changes ``state`` before it
    announces a change (the real service stores before it answers a fresh read)."""

    def __init__(self, script: list[tuple[str, dict[str, Any], dict[str, Any]]], idle: bool):
        self.state: dict[str, Any] = {"status": "Running", "names": names(), "history": {}}
        self.script = script  # (event, data, state changes) in order
        self.idle = idle  # after the script: hold the stream open, as for a quiet run
        self.stream_closed = threading.Event()
        self.authorization: list[str] = []
        self.refuse_streams = 0  # the first streams asked for fail to connect (a restart)

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield sse("status", {"status": self.state["status"]})
            for event, data, changes in self.script:
                self.state.update(changes)
                yield sse(event, data)
            if self.idle:
                await asyncio.Event().wait()
        finally:
            self.stream_closed.set()

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.authorization.append(request.headers.get("Authorization", ""))
        path = request.url.path.removeprefix("/api/v1")
        if path.endswith("/events"):
            assert request.url.params["values"] == "false"
            if self.refuse_streams:
                self.refuse_streams -= 1
                raise httpx.ConnectError("Connection refused", request=request)
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=self.events()
            )
        if path == "/runs/e_1_ab":
            return httpx.Response(200, json={"status": self.state["status"]})
        if path.endswith("/metric-names"):
            return httpx.Response(200, json=self.state["names"])
        name = path.split("/metrics/")[1].removesuffix("/history")
        return httpx.Response(200, json={"points": self.state["history"].get(name, [])})


def follow(service: FakeService) -> tuple[LiveFeed, list[RunView], threading.Event]:
    shown: list[RunView] = []
    first = threading.Event()

    def publish(view: RunView) -> None:
        shown.append(view)
        if view.status:  # read from the service (a listener first gets the blank view)
            first.set()

    feed = LiveFeed(
        "http://127.0.0.1:8642",
        {"Authorization": "Bearer ryt_test"},
        RunView("e_1_ab", URL),
        transport=httpx.MockTransport(service.handle),
    )
    feed.reconnect_delays = (0.0,)
    feed.listen(publish)
    feed.start()
    return feed, shown, first


def test_the_feed_shows_each_change_and_ends_with_the_run() -> None:
    logged = {
        "names": names(("loss", "scalar", 2, 0.25)),
        "history": {"loss": [[0, 0.5], [1, 0.25]]},
    }
    service = FakeService(
        [
            ("metrics", {"run_id": "e_1_ab", "names": ["loss"], "other": False}, logged),
            ("status", {"status": "Completed"}, {"status": "Completed"}),
        ],
        idle=False,
    )
    feed, shown, _ = follow(service)
    feed.join()  # ends by itself: the stream ends after the run's final status
    assert not feed.alive
    final = shown[-1]
    assert final.status == "Completed" and final.problem is None
    assert final.charts == {"loss": ((0.0, 0.5), (1.0, 0.25))}
    assert {m.name: m.last for m in final.metrics} == {"loss": 0.25}
    assert set(service.authorization) == {"Bearer ryt_test"}  # the workspace's own token


def test_a_lost_stream_is_opened_again_and_the_view_says_so_meanwhile() -> None:
    completed = {"status": "Completed"}
    service = FakeService([("status", completed, completed)], idle=False)
    service.refuse_streams = 2
    feed, shown, _ = follow(service)
    feed.join()
    problems = [view.problem for view in shown if view.problem]
    assert len(problems) == 2
    assert problems[0].startswith("lost the live stream from http://127.0.0.1:8642/api/v1: ")
    assert problems[0].endswith("; trying again in 0 s")
    assert shown[-1].status == "Completed" and shown[-1].problem is None


def test_a_stream_closed_before_the_run_ended_is_opened_again() -> None:
    service = FakeService([], idle=False)  # the first stream ends with the run still running
    opened = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            opened.append(request)
            if len(opened) == 2:
                service.state["status"] = "Completed"
        return service.handle(request)

    feed = LiveFeed(
        "http://127.0.0.1:8642", {}, RunView("e_1_ab", URL), httpx.MockTransport(handle)
    )
    feed.reconnect_delays = (0.0,)
    shown: list[RunView] = []
    feed.listen(shown.append)
    feed.start()
    feed.join()
    assert len(opened) == 2
    assert "the live stream closed before the run ended; trying again in 0 s" in [
        view.problem for view in shown
    ]
    assert shown[-1].status == "Completed" and shown[-1].problem is None


def test_a_read_refused_while_following_ends_the_feed_with_the_reason() -> None:
    service = FakeService(
        [("metrics", {"run_id": "e_1_ab", "names": ["loss"], "other": False}, {})], idle=True
    )
    reads = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metric-names"):
            reads.append(request)
            if len(reads) == 2:  # the read after the metrics event
                body = {"error": "NotFound", "detail": "run e_1_ab was deleted"}
                return httpx.Response(404, json=body)
        return service.handle(request)

    feed = LiveFeed(
        "http://127.0.0.1:8642", {}, RunView("e_1_ab", URL), httpx.MockTransport(handle)
    )
    shown: list[RunView] = []
    feed.listen(shown.append)
    feed.start()
    feed.join()  # ends by itself, the stream closed
    assert shown[-1].problem == "stopped following the run: run e_1_ab was deleted"
    assert service.stream_closed.is_set()


def test_stop_ends_the_stream_and_the_thread_of_a_quiet_run() -> None:
    service = FakeService([], idle=True)
    feed, shown, first = follow(service)
    assert first.wait(30), "the feed showed nothing"
    assert shown[-1].status == "Running"
    feed.stop()
    assert not feed.alive
    assert service.stream_closed.is_set()  # its live-stream slot is given back


def test_a_refused_stream_is_shown_as_the_reason_the_view_stopped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        detail = "admin has 16 live streams open, the most one token may hold"
        return httpx.Response(429, json={"error": "RateLimited", "detail": detail})

    shown: list[RunView] = []
    feed = LiveFeed(
        "http://127.0.0.1:8642", {}, RunView("e_1_ab", URL), httpx.MockTransport(refuse)
    )
    feed.listen(shown.append)
    feed.start()
    feed.join()
    assert shown[-1].problem == (
        "stopped following the run: admin has 16 live streams open, the most one token may hold"
    )
    assert "live streams open" in status_html(shown[-1])


# --- the panel -----------------------------------------------------------------------------


def test_panels_on_one_run_share_one_stream_which_ends_with_the_last_one_closed() -> None:
    from runyard.widgets.feed import shared_feed
    from runyard.widgets.panel import RunPanel

    service = FakeService([], idle=True)
    streams = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            streams.append(request)
        return service.handle(request)

    start = RunView("e_1_ab", URL)
    first = RunPanel(start)
    read = threading.Event()
    first.children[1].observe(lambda c: read.set() if "Running" in c.new else None, "value")
    feed = shared_feed("http://127.0.0.1:8642", {}, start, httpx.MockTransport(handle))
    first.follow(feed)
    assert read.wait(30), "the panel showed nothing"
    second = RunPanel(start)
    again = shared_feed("http://127.0.0.1:8642", {}, start, httpx.MockTransport(handle))
    assert again is feed
    second.follow(again)
    assert ">Running</span>" in second.children[1].value  # shown at once, not read again
    first.close()
    assert feed.alive  # the second panel still shows the run
    second.close()
    assert not feed.alive and service.stream_closed.is_set()
    assert len(streams) == 1


def test_closing_the_panel_stops_its_feed() -> None:
    from runyard.widgets.panel import RunPanel

    service = FakeService([], idle=True)
    start = RunView("e_1_ab", URL)
    panel = RunPanel(start)
    read = threading.Event()
    panel.children[1].observe(lambda c: read.set() if "Running" in c.new else None, "value")
    feed = LiveFeed("http://127.0.0.1:8642", {}, start, httpx.MockTransport(service.handle))
    feed.start()
    panel.follow(feed)
    assert read.wait(30), "the panel showed nothing"
    assert ">Running</span>" in panel.children[1].value
    panel.close()
    assert not feed.alive and service.stream_closed.is_set()


def test_show_without_ipywidgets_draws_the_run_as_it_is_and_says_how_to_get_it_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import IPython.display

    from runyard.widgets import run_details

    shown: list[Any] = []
    monkeypatch.setattr(run_details, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "runyard.widgets.panel", None)
    RunDetails(fake_run(ANSWERS)).show()
    (markup,) = [item.data for item in shown]
    assert ">Completed</span>" in markup and 'data-testid="chart-loss"' in markup
    assert "pip install &#x27;runyard[notebook]&#x27;" in markup


# --- the feed's edges ----------------------------------------------------------------------


def run_answers(handle_path: Any) -> httpx.MockTransport:
    """The fake service, except for the paths ``handle_path`` answers (None: the rest)."""
    service = FakeService([("status", {"status": "Completed"}, {"status": "Completed"})], False)

    def handle(request: httpx.Request) -> httpx.Response:
        return handle_path(request) or service.handle(request)

    return httpx.MockTransport(handle)


def followed_to_its_end(transport: httpx.MockTransport) -> list[RunView]:
    feed = LiveFeed("http://127.0.0.1:8642", {}, RunView("e_1_ab", URL), transport)
    shown: list[RunView] = []
    feed.listen(shown.append)
    feed.start()
    feed.join()  # ends by itself, saying why
    return shown


def test_an_answer_that_is_not_runyards_json_stops_the_feed_saying_so() -> None:
    def proxy_page(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/api/v1/runs/e_1_ab":
            return httpx.Response(200, text="<html>Sign in</html>", headers={
                "content-type": "text/html; charset=utf-8"})  # fmt: skip
        return None

    shown = followed_to_its_end(run_answers(proxy_page))
    assert shown[-1].problem == (
        "stopped following the run: http://127.0.0.1:8642/api/v1/runs/e_1_ab?fresh=true did "
        "not answer as Runyard does (text/html instead of JSON)"
    )


def test_an_answer_of_an_unexpected_shape_stops_the_feed_saying_so() -> None:
    def nameless(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/metric-names"):
            return httpx.Response(200, json={"data": [{"kind": "scalar"}]})
        return None

    shown = followed_to_its_end(run_answers(nameless))
    assert shown[-1].problem == "stopped following the run: KeyError: 'name'"
    assert "KeyError" in status_html(shown[-1])


def test_a_panel_joining_while_the_feed_shows_a_newer_view_ends_on_the_newer_one() -> None:
    feed = LiveFeed("http://127.0.0.1:8642", {}, RunView("e_1_ab", URL))
    drawn: list[str] = []
    newer = view_of("Completed")

    def draw(view: RunView) -> None:
        if not drawn:  # while the first view is drawn, the feed's thread shows a newer one
            thread = threading.Thread(target=feed._show, args=(newer,))
            thread.start()
            thread.join()
        drawn.append(view.status or "blank")

    feed.listen(draw)
    assert drawn[-1] == "Completed"  # not the blank view it was drawing meanwhile
    feed._show(view_of("Failed"))
    assert drawn == ["blank", "Completed", "Failed"]


def test_a_second_token_in_the_same_kernel_gets_a_feed_of_its_own() -> None:
    from runyard.widgets.feed import shared_feed

    service = FakeService([], idle=True)
    transport = httpx.MockTransport(service.handle)
    start = RunView("e_1_ab", URL)
    first = shared_feed("http://127.0.0.1:8642", {"Authorization": "Bearer ryt_a"}, start,
                        transport)  # fmt: skip
    again = shared_feed("http://127.0.0.1:8642", {"Authorization": "Bearer ryt_a"}, start,
                        transport)  # fmt: skip
    other = shared_feed("http://127.0.0.1:8642", {"Authorization": "Bearer ryt_b"}, start,
                        transport)  # fmt: skip
    try:
        assert again is first
        assert other is not first and other.headers == {"Authorization": "Bearer ryt_b"}
    finally:
        first.stop()
        other.stop()
