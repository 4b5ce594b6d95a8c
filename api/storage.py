"""Files on the service's disk: content-addressed snapshots and each run's own files."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from runyard.errors import InvalidInput, NotFound, SnapshotTooLarge

DIGEST_PREFIX = "sha256:"


class SnapshotStore:
    """``<root>/sha256/<hex>.tar.gz``: the same folder submitted twice is stored once."""

    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix(DIGEST_PREFIX)
        if (
            not digest.startswith(DIGEST_PREFIX)
            or len(hexdigest) != 64
            or not all(c in "0123456789abcdef" for c in hexdigest)
        ):
            raise InvalidInput(f"{digest!r} is not a snapshot digest (sha256:<64 hex>)")
        return self.root / f"{hexdigest}.tar.gz"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def require(self, digest: str) -> Path:
        path = self.path(digest)
        if not path.is_file():
            raise NotFound(f"no snapshot {digest}; upload it with the run")
        return path

    def put(self, digest: str, archive: bytes) -> bool:
        """Store an archive (already validated); False when it was there already."""
        target = self.path(digest)
        if target.is_file():
            return False
        _write_atomically(target, archive)
        return True


class RunFileStore:
    """``<root>/<run id>/<name>``: a run's uploaded files, never outside its folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, run_id: str, name: str) -> Path:
        return self.run_root(run_id) / safe_name(name)

    def run_root(self, run_id: str) -> Path:
        if "/" in run_id or run_id in ("", ".", "..") or "\x00" in run_id:
            raise InvalidInput(f"bad run id {run_id!r}")
        return self.root / run_id

    async def put(self, run_id: str, name: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Stream an upload to disk; refuse it past ``limit`` bytes and leave nothing behind."""
        target = self.path(run_id, name)
        run_root = self.run_root(run_id)
        # Create each parent as a real directory inside the run's folder (no link follows).
        current = run_root
        current.mkdir(parents=True, exist_ok=True)
        for part in PurePosixPath(safe_name(name)).parts[:-1]:
            current = current / part
            if current.is_symlink() or (current.exists() and not current.is_dir()):
                raise InvalidInput(f"{name!r}: {part!r} is not a folder")
            current.mkdir(exist_ok=True)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        size = 0
        try:
            with open(partial, "xb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise SnapshotTooLarge(f"file {name!r} is over the {limit} byte limit")
                    out.write(chunk)
            if target.is_symlink():
                target.unlink()
            os.replace(partial, target)
        except IsADirectoryError as exc:
            raise InvalidInput(f"{name!r} is a folder of this run's files") from exc
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidInput(f"file name {name[:60]!r}... is too long") from exc
            raise
        finally:
            partial.unlink(missing_ok=True)
        return size

    def open(self, run_id: str, name: str) -> Path:
        path = self.path(run_id, name)
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"run {run_id} has no file {name!r}")
        return path


def safe_name(name: str) -> str:
    """A relative POSIX path with no ``..``, no absolute root, no empty or odd parts."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise InvalidInput(f"file name {name!r} must be a relative path")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in parts) or len(name) > 1024:
        raise InvalidInput(f"file name {name!r} must not contain '.' or '..' parts")
    if any(len(p.encode()) > 255 for p in parts):
        raise InvalidInput(f"file name {name[:60]!r}...: a part is over 255 bytes")
    return "/".join(parts)


def _write_atomically(target: Path, data: bytes) -> None:
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
