"""HTTP to the Runyard API: requests, streams, downloads, and errors turned back into the
``RunyardError`` the server raised. Which resource lives at which path is
``runyard.client``'s business (and ``runyard.api_paths``'); this module knows none.

Standard library only, on purpose: the SDK must import inside any run image with Python
3.9 or newer, where nothing has been installed. Error responses carry
``{"error": <class name>, "detail": <message>}``; the transport raises the same
``RunyardError`` subclass the server raised, so callers catch one tree everywhere.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union

from runyard.config import DEFAULT_URL, redact_url
from runyard.errors import BY_NAME, ConfigurationError, RunyardError, ServiceUnavailable
from runyard.tracking import contract

API = "/api/v1"
Body = Union[bytes, IO[bytes], None]


class Response:
    def __init__(self, status: int, body: bytes, headers: Any, url: str = "") -> None:
        self.status_code = status
        self.content = body
        self.headers = headers
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return loads(self.content)
        except ValueError:
            # Something answered, but not Runyard: a URL naming another server or page.
            kind = (self.headers.get("Content-Type") if self.headers else None) or "no JSON"
            raise ConfigurationError(
                f"{redact_url(self.url)} did not answer as Runyard does ({kind.split(';')[0]} "
                "instead of JSON): is the Runyard URL right?"
            ) from None


class Transport:
    """One service, one token: what every call to it shares."""

    def __init__(
        self, base_url: str = DEFAULT_URL, token: Optional[str] = None, timeout: float = 60
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        token = token if token is not None else os.environ.get(contract.TOKEN)
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def close(self) -> None:
        """Nothing to release (no pooled connections); kept for symmetry with other clients."""

    def url(self, path: str, params: Optional[Dict[str, Any]] = None) -> str:
        url = self.base_url + path
        if params:
            pairs = [(k, _param(v)) for k, v in params.items() if v is not None]
            url += "?" + urllib.parse.urlencode(pairs, doseq=True)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Dict[str, Any]] = None,
        json: Any = None,
        content: Body = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        api: bool = True,
    ) -> Response:
        with self._open(
            method, (API if api else "") + path, params, json, content, headers, timeout
        ) as response:
            return Response(response.status, response.read(), response.headers, response.url)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Any]:
        with self._open(method, API + path, params, None, None, None, timeout) as response:
            yield response

    @contextmanager
    def _open(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]],
        json: Any,
        content: Body,
        headers: Optional[Dict[str, str]],
        timeout: Optional[float],
    ) -> Iterator[Any]:
        all_headers = dict(self.headers)
        if json is not None:
            content = dumps(json).encode()
            all_headers["Content-Type"] = "application/json"
        if headers:
            all_headers.update(headers)
        if content is not None and not isinstance(content, bytes):
            all_headers.setdefault("Content-Type", "application/octet-stream")
            all_headers["Content-Length"] = str(os.fstat(content.fileno()).st_size)
        request = urllib.request.Request(
            self.url(path, params), data=content, headers=all_headers, method=method
        )
        try:
            response = urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise error_from(exc.code, exc.read(), path) from None
        except (urllib.error.URLError, OSError, socket.timeout) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnavailable(f"cannot reach Runyard at {self.base_url}: {reason}") from None
        with response:
            yield response

    def server_events(
        self, path: str, params: Optional[Dict[str, Any]] = None, timeout: float = 3600
    ) -> Iterator[Tuple[str, Any]]:
        """A stream of Server-Sent Events as (event, decoded JSON data), until it ends."""
        try:
            with self.stream("GET", path, params, timeout=timeout) as response:
                for event, data in _parse_sse(response):
                    yield event, loads(data)
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            # HTTPException: IncompleteRead, the connection dropped in the middle of a chunk.
            raise ServiceUnavailable(f"lost the event stream from {self.base_url}: {exc}") from None

    def download(self, path: str, destination: Path) -> None:
        """Stream ``path`` into ``destination``, which appears whole or not at all."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        try:
            with self.stream("GET", path) as response, open(partial, "wb") as out:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
        except RunyardError:
            partial.unlink(missing_ok=True)
            raise
        except (OSError, socket.timeout) as exc:
            partial.unlink(missing_ok=True)
            raise ServiceUnavailable(f"download from {self.base_url} failed: {exc}") from None
        os.replace(partial, destination)


def _parse_sse(response: Any) -> Iterator[Tuple[str, str]]:
    event, data = "message", []  # type: Tuple[str, List[str]]
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue  # a keep-alive comment
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def error_from(status: int, body: bytes, path: str) -> RunyardError:
    try:
        data = loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    detail = data.get("detail")
    if not isinstance(detail, str):
        detail = f"HTTP {status} from {path}"
    cls = BY_NAME.get(str(data.get("error")))
    if cls is None:
        cls = next((c for c in BY_NAME.values() if c.http_status == status), RunyardError)
    error = cls(detail, field=data.get("field"))
    error.http_status = status
    return error


def encode_multipart(
    fields: Dict[str, str], files: Dict[str, Tuple[str, bytes, str]]
) -> Tuple[bytes, str]:
    boundary = f"runyard-{secrets.token_hex(16)}"
    parts: List[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, (filename, data, content_type) in files.items():
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(header.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def dumps(value: Any) -> str:
    """Non-finite floats go as the bare tokens ``NaN``, ``Infinity`` and ``-Infinity``, not
    as strings: not strict JSON, but what Python's json (the API's too) reads back as
    floats, so a metric logged as NaN reads back NaN. Only the browser-facing live stream
    spells them as strings (``api/live.py``)."""
    return jsonlib.dumps(value, allow_nan=True)


try:  # a service dependency; a run image may not have it, and then json reads alone
    from orjson import JSONDecodeError as _FastError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - exercised in run images without orjson
    _fast_loads = None


def loads(data: Union[bytes, str]) -> Any:
    """JSON as Python's json reads it; orjson first where it is installed (a million
    points read back in a fraction of the time), Python's json for what orjson refuses
    (NaN and infinities, integers past 64 bits), so every value reads back the same."""
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except _FastError:
            pass
    return jsonlib.loads(data)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
