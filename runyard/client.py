"""The HTTP client behind the SDK, the CLI and the workers.

Error responses carry ``{"error": <class name>, "detail": <message>}``; the client raises
the same ``RunyardError`` subclass the server raised, so callers catch one tree everywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from runyard.errors import BY_NAME, RunyardError, ServiceUnavailable

DEFAULT_URL = "http://127.0.0.1:8642"
API = "/api/v1"


class Client:
    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    # --- plumbing ---------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"cannot reach Runyard at {self.base_url}: {exc}") from exc
        raise_for_error(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- clusters ---------------------------------------------------------------------------

    def create_cluster(self, name: str, **settings: Any) -> dict[str, Any]:
        return self.json("POST", "/clusters", json={"name": name, **settings})

    def list_clusters(self) -> list[dict[str, Any]]:
        return self.json("GET", "/clusters")["data"]

    def get_cluster(self, name: str) -> dict[str, Any]:
        return self.json("GET", f"/clusters/{name}")

    def update_cluster(self, name: str, **changes: Any) -> dict[str, Any]:
        return self.json("PATCH", f"/clusters/{name}", json=changes)

    def delete_cluster(self, name: str, force: bool = False) -> dict[str, Any]:
        return self.json("DELETE", f"/clusters/{name}", params={"force": force})

    def cluster_runs(self, name: str, status: str = "all") -> list[dict[str, Any]]:
        return self.json("GET", f"/clusters/{name}/runs", params={"status": status})["data"]

    def cancel_queued(self, name: str) -> list[dict[str, Any]]:
        return self.json("POST", f"/clusters/{name}/cancel-queued")["data"]

    def list_workers(self) -> list[dict[str, Any]]:
        return self.json("GET", "/workers")["data"]

    # --- runs -------------------------------------------------------------------------------

    def has_snapshot(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/snapshots/{digest}")
        except RunyardError as exc:
            if getattr(exc, "http_status", None) == 404:
                return False
            raise
        return True

    def submit(self, spec: dict[str, Any], archive: bytes | None = None) -> dict[str, Any]:
        files = {"snapshot": ("snapshot.tar.gz", archive, "application/gzip")} if archive else None
        return self.json("POST", "/runs", data={"spec": json.dumps(spec)}, files=files)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.json("GET", f"/runs/{run_id}")

    def list_runs(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self.json("GET", "/runs", params=params)["data"]

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self.json("POST", f"/runs/{run_id}/cancel")

    def cancel_many(self, run_ids: list[str]) -> list[dict[str, Any]]:
        return self.json("POST", "/runs/cancel", json={"run_ids": run_ids})["data"]

    def logs(self, run_id: str) -> str:
        return self.request("GET", f"/runs/{run_id}/logs").text

    def follow_logs(self, run_id: str) -> Iterator[str]:
        """Yield the log as it is written, returning when the run has ended."""
        try:
            with self.http.stream(
                "GET", f"{API}/runs/{run_id}/logs", params={"follow": True}, timeout=None
            ) as response:
                if response.is_error:
                    response.read()
                    raise_for_error(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"lost the log stream from {self.base_url}: {exc}") from exc

    def download_snapshot(self, digest: str, destination: Path) -> None:
        self._download(f"/snapshots/{digest}", destination)

    def download_run_snapshot(self, run_id: str, destination: Path) -> None:
        self._download(f"/runs/{run_id}/snapshot", destination)

    def upload_file(self, run_id: str, name: str, content: IO[bytes] | bytes) -> dict[str, Any]:
        return self.json("PUT", f"/runs/{run_id}/files/{name}", content=content)

    def list_files(self, run_id: str) -> list[dict[str, Any]]:
        return self.json("GET", f"/runs/{run_id}/files")["data"]

    def download_file(self, run_id: str, name: str, destination: Path) -> None:
        self._download(f"/runs/{run_id}/files/{name}", destination)

    def _download(self, path: str, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        try:
            with self.http.stream("GET", API + path) as response:
                if response.is_error:
                    response.read()
                    raise_for_error(response)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"download from {self.base_url} failed: {exc}") from exc
        os.replace(partial, destination)


def raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = f"HTTP {response.status_code} from {response.request.url.path}"
    cls = BY_NAME.get(str(body.get("error")) if isinstance(body, dict) else "", None)
    if cls is None:
        cls = next(
            (c for c in BY_NAME.values() if c.http_status == response.status_code), RunyardError
        )
    error = cls(detail, field=body.get("field") if isinstance(body, dict) else None)
    error.http_status = response.status_code
    raise error
