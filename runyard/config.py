"""Where the SDK and CLI find the service: environment, then a config file, then the default.

``RUNYARD_URL`` / ``RUNYARD_TOKEN`` win; otherwise ``config.json`` or ``.runyard/config.json``
in the current folder or any parent (as ``azureml.core.Workspace.from_config`` searches).
"""

from __future__ import annotations

import json
import os
import urllib.parse
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


def write_config_file(path: Path, url: str, token: str) -> None:
    """The client config ``runyard up`` leaves for the SDK and CLI: owner-only (0600),
    since it holds a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "token": token}, out, indent=2)
    os.chmod(path, 0o600)  # it may have existed with looser bits


def redact_url(url: str) -> str:
    """A service URL fit for logs and errors: any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
