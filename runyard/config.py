"""Where the SDK and CLI find the service: environment, then a config file, then the default.

``RUNYARD_URL`` / ``RUNYARD_TOKEN`` win; otherwise ``config.json`` or ``.runyard/config.json``
in the current folder or any parent (as ``azureml.core.Workspace.from_config`` searches).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8642"
CONFIG_NAMES = (Path(".runyard") / "config.json", Path("config.json"))


@dataclass(frozen=True)
class ClientConfig:
    url: str = DEFAULT_URL
    token: str | None = None
    source: str = "default"


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest Runyard config; a ``config.json`` without a ``url`` is someone else's
    (a model folder, an Azure workspace file) and is passed over."""
    folder = (start or Path.cwd()).resolve()
    for directory in (folder, *folder.parents):
        for name in CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file() and (name != Path("config.json") or _has_url(candidate)):
                return candidate
    return None


def _has_url(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("url") or data.get("api_url"))


def read_config_file(path: Path) -> ClientConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    url = data.get("url") or data.get("api_url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{path} has no 'url' of the Runyard service")
    return ClientConfig(url=url, token=data.get("token"), source=str(path))


def load(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    env_url = os.environ.get("RUNYARD_URL")
    env_token = os.environ.get("RUNYARD_TOKEN")
    if path is not None:
        given = Path(path)
        found = find_config_file(given) if given.is_dir() else given
        if found is None or not found.is_file():
            raise ConfigurationError(f"no Runyard config file at {given}")
        config = read_config_file(found)
    elif env_url:
        return ClientConfig(url=env_url, token=env_token, source="RUNYARD_URL")
    else:
        found = find_config_file()
        config = read_config_file(found) if found else ClientConfig()
    if env_token:
        config = ClientConfig(url=config.url, token=env_token, source=config.source)
    return config
