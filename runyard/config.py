"""Where the SDK and CLI find the service, and the token to show it.

The service's URL: ``--url`` (the CLI), else ``RUNYARD_URL``, else ``config.json`` or
``.runyard/config.json`` in the current folder or any parent (as
``azureml.core.Workspace.from_config`` searches). With none of them there is no guess: the
error names every folder looked in, since a default URL would make a missing config look
like a service that is down.

The token: ``RUNYARD_TOKEN``, else a ``token`` an older config file still holds, else the
user's credentials file, keyed by service URL (``credentials_path()``:
``$XDG_CONFIG_HOME/runyard/credentials.json``, by default under ``~/.config``). Tokens live
there, outside project folders, as cloud CLIs keep theirs: a project folder is what gets
packed into snapshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from runyard.errors import ConfigNotFound, ConfigurationError
from runyard.tracking import contract

DEFAULT_URL = "http://127.0.0.1:8642"  # where `runyard up` listens unless told otherwise
CONFIG_NAMES = (Path(".runyard") / "config.json", Path("config.json"))
CREDENTIALS_NAME = "credentials.json"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None = None
    source: str = contract.URL  # or the config file's path


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest Runyard config; a ``config.json`` without a ``url`` is someone else's
    (a model folder, an Azure workspace file) and is passed over."""
    for directory in search_folders(start):
        for name in CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file() and (name != Path("config.json") or _has_url(candidate)):
                return candidate
    return None


def search_folders(start: Path | None = None) -> List[Path]:
    """Where a config is looked for, nearest first: ``start`` (the current folder) and
    each of its parents."""
    folder = (start or Path.cwd()).resolve()
    return [folder, *folder.parents]


def not_found(start: Path | None = None) -> ConfigNotFound:
    """The error that says where the search went, and the two ways out."""
    folders = search_folders(start)
    passed_over = [
        str(d / "config.json") for d in folders if (d / "config.json").is_file()
    ]  # they had no url: someone else's config.json
    names = " or ".join(str(n) for n in CONFIG_NAMES)
    note = f"; passed over {', '.join(passed_over)} (no url)" if passed_over else ""
    return ConfigNotFound(
        f"no Runyard config found (looked in: {', '.join(str(d) for d in folders)} "
        f"for {names}{note}); run `runyard up` here or set RUNYARD_URL"
    )


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
    return ClientConfig(url=url, token=data.get("token") or None, source=str(path))


def write_config_file(path: Path, url: str, token: Optional[str] = None) -> None:
    """A project's client config (what ``runyard up`` leaves for the SDK and CLI): the URL,
    and a token only where no credentials file can hold it. Owner-only (0600) either way."""
    data: Dict[str, str] = {"url": url}
    if token:
        data["token"] = token
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(path, 0o600)  # it may have existed with looser bits


# --------------------------------------------------------------------------------------------
# The user's credentials file
# --------------------------------------------------------------------------------------------


def credentials_path() -> Path:
    """``$XDG_CONFIG_HOME/runyard/credentials.json``; ``~/.config`` when that is unset or
    not absolute (as the XDG base directory rules say)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "runyard" / CREDENTIALS_NAME


def service_key(url: str) -> str:
    """The form a URL is filed under: scheme and host in lower case, no trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    return urllib.parse.urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", "")
    )


def read_credentials(path: Optional[Path] = None) -> Dict[str, Any]:
    """The credentials file as a dict; ``{}`` when there is none."""
    path = path or credentials_path()
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} does not hold a JSON object")
    return data


def stored_token(url: str, path: Optional[Path] = None) -> Optional[str]:
    """The token the credentials file keeps for the service at ``url``, if any."""
    entry = _section(read_credentials(path), "services").get(service_key(url))
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def stored_tokens(path: Optional[Path] = None) -> List[str]:
    """Every token the credentials file holds (the snapshot packer leaves out files that
    contain one); an unreadable file holds none."""
    try:
        data = read_credentials(path)
    except ConfigurationError:
        return []
    found = []
    for section in ("services", "local_stacks"):
        for entry in _section(data, section).values():
            token = entry.get("token") if isinstance(entry, dict) else None
            if isinstance(token, str) and token and token not in found:
                found.append(token)
    return found


def save_token(
    url: str,
    token: str,
    path: Optional[Path] = None,
    data_dir: Optional[Path] = None,
) -> Path:
    """File ``token`` under ``url`` (and, for ``runyard up``, under its data folder, so a
    later start finds the same token whatever port it listens on). The file is owner-only
    (0600, in a 0700 folder), replaced atomically under a lock."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(path):
        data = read_credentials(path)
        _section(data, "services", create=True)[service_key(url)] = {"token": token}
        if data_dir is not None:
            stacks = _section(data, "local_stacks", create=True)
            stacks[str(Path(data_dir).resolve())] = {"token": token}
        fd, draft = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
                json.dump(data, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(draft, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(draft)
            raise
    return path


def local_stack_token(
    data_dir: Path, url: str, new_token: Callable[[], str]
) -> Tuple[str, bool, Optional[Path]]:
    """The admin token of ``runyard up``'s data folder: ``(token, made_now, credentials)``.

    Kept in the credentials file under the data folder (and under ``url`` for the SDK and
    CLI), so later starts reuse it; ``<data>/config.json`` gets the URL only. A token an
    older ``runyard up`` left in that config is moved out. Where no credentials file can
    be written (a read-only home), the config keeps the token, as before (``credentials``
    is then None); the snapshot packer never ships such a file either way.
    """
    data_dir = Path(data_dir)
    config_file = data_dir / "config.json"
    token = None
    if config_file.is_file():
        with contextlib.suppress(ConfigurationError):
            token = read_config_file(config_file).token
    if not token:
        entry = _section(read_credentials(), "local_stacks").get(str(data_dir.resolve()))
        token = entry.get("token") if isinstance(entry, dict) else None
    made_now = not (isinstance(token, str) and token)
    kept = new_token() if made_now else str(token)
    try:
        saved: Optional[Path] = save_token(url, kept, data_dir=data_dir)
    except OSError:
        saved = None
    write_config_file(config_file, url, None if saved else kept)
    return kept, made_now, saved


def _section(data: Dict[str, Any], name: str, create: bool = False) -> Dict[str, Any]:
    section = data.get(name)
    if isinstance(section, dict):
        return section
    if not create:
        return {}
    data[name] = {}
    return data[name]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the file (POSIX), so two writers never lose an entry."""
    try:
        import fcntl
    except ImportError:  # Windows: last writer wins
        yield
        return
    fd = os.open(str(path.with_name(f".{path.name}.lock")), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------


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


def token_for(url: str) -> Optional[str]:
    """The token to use with the service at ``url``: ``RUNYARD_TOKEN``, else the one the
    credentials file keeps for it."""
    return os.environ.get(contract.TOKEN) or stored_token(url)


def load(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    env_url = os.environ.get(contract.URL)
    env_token = os.environ.get(contract.TOKEN)
    if path is not None:  # azureml: a folder to search from (and up), or the file itself
        given = Path(path)
        if given.is_dir():
            found = find_config_file(given)
            if found is None:
                raise not_found(given)
        elif given.is_file():
            found = given
        else:
            raise ConfigNotFound(f"no Runyard config file at {os.fspath(path)}")
        config = read_config_file(found)
    elif env_url:
        config = ClientConfig(url=env_url, source=contract.URL)
    else:
        found = find_config_file()
        if found is None:
            raise not_found()
        config = read_config_file(found)
    # RUNYARD_TOKEN wins; an older config that still holds a token keeps working; else
    # the credentials file's token for this URL.
    token = env_token or config.token or stored_token(config.url)
    return ClientConfig(url=config.url, token=token, source=config.source)
