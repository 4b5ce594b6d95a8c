"""A URL that names some other web server: one line saying so, not a JSON traceback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.services import runyard
from tests.support.stub_api import serve


class HtmlPage(BaseHTTPRequestHandler):
    """What a web server that is not Runyard answers: a page."""

    def do_GET(self) -> None:  # the stdlib names it so
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    with serve(HtmlPage) as url:
        yield url


def test_a_url_of_another_web_server_is_one_line_and_exit_7(other_server: str) -> None:
    env = {**os.environ, "RUNYARD_URL": other_server, "RUNYARD_TOKEN": "ryt_x"}
    result = subprocess.run(
        runyard("clusters"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 7, result.stderr
    assert result.stderr.strip() == (
        f"error: {other_server}/api/v1/clusters did not answer as Runyard does (text/html "
        "instead of JSON): is the Runyard URL right?"
    )
