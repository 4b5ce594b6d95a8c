"""The HTTP client behind the SDK, the CLI and the workers.

Standard library only, on purpose: the SDK must import inside any run image with Python
3.8 or newer, where nothing has been installed. Error responses carry
``{"error": <class name>, "detail": <message>}``; the client raises the same
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


class Client:
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

    # --- plumbing ---------------------------------------------------------------------------

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

    # --- clusters ---------------------------------------------------------------------------

    def create_cluster(self, name: str, **settings: Any) -> Dict[str, Any]:
        return self.json("POST", "/clusters", json={"name": name, **settings})

    def list_clusters(self) -> List[Dict[str, Any]]:
        return self.json("GET", "/clusters")["data"]

    def get_cluster(self, name: str) -> Dict[str, Any]:
        return self.json("GET", f"/clusters/{_q(name)}")

    def update_cluster(self, name: str, **changes: Any) -> Dict[str, Any]:
        return self.json("PATCH", f"/clusters/{_q(name)}", json=changes)

    def delete_cluster(self, name: str, force: bool = False) -> Dict[str, Any]:
        return self.json("DELETE", f"/clusters/{_q(name)}", params={"force": force})

    def cluster_runs(self, name: str, status: str = "all") -> List[Dict[str, Any]]:
        return self.json("GET", f"/clusters/{_q(name)}/runs", params={"status": status})["data"]

    def cancel_queued(self, name: str) -> List[Dict[str, Any]]:
        return self.json("POST", f"/clusters/{_q(name)}/cancel-queued")["data"]

    def list_workers(self) -> List[Dict[str, Any]]:
        return self.json("GET", "/workers")["data"]

    # --- tokens and audit -------------------------------------------------------------------

    def run_token(self, run_id: str, attempt: int) -> str:
        """Workers: the token the run itself gets (its own tree, while this attempt runs)."""
        path = f"/runs/{_q(run_id)}/run-token"
        return self.json("POST", path, json={"attempt": attempt})["token"]

    def create_token(self, **spec: Any) -> Dict[str, Any]:
        return self.json("POST", "/tokens", json=spec)

    def list_tokens(self, include_revoked: bool = False) -> List[Dict[str, Any]]:
        return self.json("GET", "/tokens", params={"include_revoked": include_revoked})["data"]

    def revoke_token(self, token_id: str) -> Dict[str, Any]:
        return self.json("POST", f"/tokens/{_q(token_id)}/revoke")

    def whoami(self) -> Dict[str, Any]:
        return self.json("GET", "/whoami")

    def audit(self, **filters: Any) -> List[Dict[str, Any]]:
        return self.json("GET", "/audit", params=filters)["data"]

    # --- runs -------------------------------------------------------------------------------

    def has_snapshot(self, digest: str) -> bool:
        """Whether the service has it (a run's own token may not ask: then send it)."""
        try:
            self.request("HEAD", f"/snapshots/{_q(digest)}")
        except RunyardError as exc:
            if exc.http_status in (403, 404):
                return False
            raise
        return True

    def submit(self, spec: Dict[str, Any], archive: Optional[bytes] = None) -> Dict[str, Any]:
        files = {"snapshot": ("snapshot.tar.gz", archive, "application/gzip")} if archive else {}
        body, content_type = encode_multipart({"spec": dumps(spec)}, files)
        return self.json("POST", "/runs", content=body, headers={"Content-Type": content_type})

    def get_run(self, run_id: str, fresh: bool = False) -> Dict[str, Any]:
        """With ``fresh``, read once everything reported before the call is stored."""
        params = {"fresh": True} if fresh else None
        return self.json("GET", f"/runs/{_q(run_id)}", params=params)

    def list_runs(self, **filters: Any) -> List[Dict[str, Any]]:
        return self.json("GET", "/runs", params=filters)["data"]

    def iter_runs(self, page: int = 500, **filters: Any) -> Iterator[Dict[str, Any]]:
        """Every run the filters match, a page at a time."""
        offset = 0
        while True:
            data = self.list_runs(limit=page, offset=offset, **filters)
            yield from data
            if len(data) < page:
                return
            offset += len(data)

    def cancel(self, run_id: str) -> Dict[str, Any]:
        return self.json("POST", f"/runs/{_q(run_id)}/cancel")

    def fail(self, run_id: str, reason: str) -> Dict[str, Any]:
        return self.json("POST", f"/runs/{_q(run_id)}/fail", json={"error": reason})

    def cancel_many(self, run_ids: List[str]) -> List[Dict[str, Any]]:
        return self.json("POST", "/runs/cancel", json={"run_ids": run_ids})["data"]

    def logs(self, run_id: str) -> str:
        return self.request("GET", f"/runs/{_q(run_id)}/logs").text

    def follow_logs(self, run_id: str) -> Iterator[str]:
        """Yield the log as it is written (from the run's Server-Sent Events), returning
        when the run has ended."""
        for event, data in self.events(run_id, history=True):
            if event == "log":
                yield data["text"]

    def events(self, run_id: str, history: bool = False) -> Iterator[Tuple[str, Any]]:
        """The run's Server-Sent Events as (event, data) until it ends."""
        try:
            with self.stream(
                "GET", f"/runs/{_q(run_id)}/events", {"history": history}, timeout=3600
            ) as response:
                for event, data in _parse_sse(response):
                    yield event, loads(data)
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            # HTTPException: IncompleteRead, the connection dropped in the middle of a chunk.
            raise ServiceUnavailable(f"lost the event stream from {self.base_url}: {exc}") from None

    def download_snapshot(self, digest: str, destination: Path) -> None:
        self._download(f"/snapshots/{_q(digest)}", destination)

    def download_run_snapshot(self, run_id: str, destination: Path) -> None:
        self._download(f"/runs/{_q(run_id)}/snapshot", destination)

    def upload_file(
        self, run_id: str, name: str, content: Union[IO[bytes], bytes]
    ) -> Dict[str, Any]:
        return self.json("PUT", f"/runs/{_q(run_id)}/files/{_q(name, '/')}", content=content)

    def list_files(self, run_id: str) -> List[Dict[str, Any]]:
        return self.json("GET", f"/runs/{_q(run_id)}/files")["data"]

    def download_file(self, run_id: str, name: str, destination: Path) -> None:
        self._download(f"/runs/{_q(run_id)}/files/{_q(name, '/')}", destination)

    def _download(self, path: str, destination: Path) -> None:
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


# Non-finite floats travel as the strings "NaN", "Infinity", "-Infinity" (strict JSON).
def dumps(value: Any) -> str:
    return jsonlib.dumps(value, allow_nan=True)


def loads(data: Union[bytes, str]) -> Any:
    return jsonlib.loads(data)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _q(value: str, safe: str = "") -> str:
    return urllib.parse.quote(value, safe=safe)
