"""A requeued run's stored ``outputs/`` and ``checkpoints/`` put back in its working folder
before its next attempt's script starts, so a training loop can resume where it stopped.

What comes back is untrusted twice over: the names come from the API, and the files were
the run's own. A name is restored only if it is a relative path inside one of those two
folders made of plain parts (no ``..``, ``.``, empty part, NUL or backslash). Its folders
are made and opened one part at a time from the working folder's descriptor
(``O_DIRECTORY|O_NOFOLLOW``: a link the snapshot put in the way is refused, never
followed); the file is written to a fresh name beside it (``O_CREAT|O_EXCL|O_NOFOLLOW``)
and renamed over its own name, which replaces a link rather than writing through it. The
total is capped (the run's workspace budget): past it, the rest is not restored.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from runyard.client import Client
from runyard.errors import NotFound, RequestTooLarge, ServiceUnavailable, UnsafeEntry
from worker.run_folder import KEPT_FOLDERS, open_folder

CHUNK = 1 << 20
WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Restored:
    """What ``restore`` put back, and one line for each file it would not."""

    files: int = 0
    bytes: int = 0
    refused: list[str] = field(default_factory=list)


def restore(api: Client, run_id: str, workdir: int, limit: int) -> Restored:
    """Put the run's stored files under ``outputs/`` and ``checkpoints/`` into the working
    folder open as ``workdir``, at most ``limit`` bytes in all, in name order."""
    done = Restored()
    listing = [entry for entry in api.list_files(run_id) if _kept(entry.get("name"))]
    for entry in sorted(listing, key=lambda e: str(e["name"])):
        name = str(entry["name"])
        try:
            parts = plain_parts(name)
            if done.bytes + int(entry.get("size") or 0) > limit:
                raise RequestTooLarge("over the cap")
            done.bytes += _restore_one(api, run_id, workdir, parts, limit - done.bytes)
            done.files += 1
        except UnsafeEntry as exc:
            done.refused.append(f"{name!r} not restored: {exc}")
        except NotFound:
            continue  # deleted since the listing: nothing to put back
        except RequestTooLarge:
            done.refused.append(
                f"{name!r} and the files after it not restored: over {limit} bytes in all"
            )
            break
    return done


def _kept(name: Any) -> bool:
    return isinstance(name, str) and name.split("/", 1)[0] in KEPT_FOLDERS


def plain_parts(name: str) -> list[str]:
    """``name``'s parts, refused unless it is a relative path under one of the kept folders
    whose every part is a plain name."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise UnsafeEntry("not a relative path")
    parts = name.split("/")
    if len(parts) < 2 or parts[0] not in KEPT_FOLDERS:
        raise UnsafeEntry(f"not inside {' or '.join(KEPT_FOLDERS)}")
    if any(part in ("", ".", "..") or len(part.encode()) > 255 for part in parts):
        raise UnsafeEntry("an empty, '.', '..' or over-long part")
    return parts


@retry(
    retry=retry_if_exception_type(ServiceUnavailable),
    wait=wait_exponential(multiplier=0.5, max=15),
    stop=stop_after_delay(300),
    reraise=True,
)
def _restore_one(api: Client, run_id: str, workdir: int, parts: list[str], left: int) -> int:
    """One file written in place through descriptors; its size is returned. An API restart
    is waited out (the file is written again from the start)."""
    opened: list[int] = []
    folder = workdir
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):  # mkdir never follows a link
                os.mkdir(part, 0o755, dir_fd=folder)
            folder = open_folder(part, folder)  # refuses a link or a file in the way
            opened.append(folder)
        return _write(api, run_id, "/".join(parts), folder, parts[-1], left)
    finally:
        for fd in opened:
            os.close(fd)


def _write(api: Client, run_id: str, name: str, folder: int, filename: str, left: int) -> int:
    temporary = f".restoring-{secrets.token_hex(8)}"
    try:
        fd = os.open(temporary, WRITE, 0o644, dir_fd=folder)
        written = 0
        with os.fdopen(fd, "wb") as out, api.read_file(run_id, name) as response:
            while chunk := response.read(CHUNK):
                written += len(chunk)
                if written > left:
                    raise RequestTooLarge("over the cap")
                out.write(chunk)
        os.replace(temporary, filename, src_dir_fd=folder, dst_dir_fd=folder)
        return written
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise ServiceUnavailable(f"download of {name!r} broke off: {exc}") from None
    except OSError as exc:  # a folder of that name in the way, say
        raise UnsafeEntry(exc.strerror or str(exc)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
