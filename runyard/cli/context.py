"""The client a CLI command talks through, from ``--url`` / ``RUNYARD_URL`` / config file.

The token: ``RUNYARD_TOKEN``, else (for a config file) one it still holds, else the one the
user's credentials file keeps for that URL (``runyard.config``).
"""

from __future__ import annotations

from runyard import config
from runyard.client import Client

_url_override: str | None = None


def set_url(url: str | None) -> None:
    global _url_override
    _url_override = url


def client() -> Client:
    if _url_override:
        return Client(_url_override, config.token_for(_url_override))
    loaded = config.load()
    return Client(loaded.url, loaded.token)
