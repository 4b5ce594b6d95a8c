"""The client a CLI command talks through, from ``--url`` / ``RUNYARD_URL`` / config file."""

from __future__ import annotations

from runyard import config
from runyard.client import Client

_url_override: str | None = None


def set_url(url: str | None) -> None:
    global _url_override
    _url_override = url


def client() -> Client:
    loaded = config.load()
    return Client(_url_override or loaded.url, loaded.token)
