"""The client a CLI command talks through, from ``--url`` / ``RUNYARD_URL`` / config file."""

from __future__ import annotations

import os

from runyard import config
from runyard.client import Client

_url_override: str | None = None


def set_url(url: str | None) -> None:
    global _url_override
    _url_override = url


def client() -> Client:
    if _url_override:
        return Client(_url_override, os.environ.get("RUNYARD_TOKEN"))
    loaded = config.load()
    return Client(loaded.url, loaded.token)
