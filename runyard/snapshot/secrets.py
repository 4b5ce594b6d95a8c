"""What a snapshot never carries, whatever the ignore files say (client side).

Runyard's own folder in a project, a client config or credentials file holding a token, a
folder of the service's data (``runyard up``'s: its ``secret_key``, its database, stored
snapshots) or a worker's folder are left out where they sit in the tree, and so is any file
whose content holds the caller's token or a secret found on the way (looked for while the
file is read for the archive, so each file is still read once).
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import IO, Dict, Optional, Sequence, Tuple

from runyard.snapshot.files import O_BINARY, O_CLOEXEC, O_NOFOLLOW

# Runyard's own folder in a project (the client config, ``runyard up``'s data): never packed.
RUNYARD_FOLDER = ".runyard"
# Files under these names are read as a Runyard client config or credentials file
# (when small enough to be one); tokens shorter than this are not looked for in file
# contents (every issued token is far longer; a short one would match ordinary text).
_CLIENT_FILE_NAMES = ("config.json", "credentials.json")
_MAX_CLIENT_FILE_BYTES = 1024 * 1024
_MIN_SECRET_CHARS = 16
_SECRET_KEY_RE = re.compile(r"[0-9a-f]{64}")  # what the API writes to <data>/secret_key
_MAX_NOTED = 5


def service_folder(
    abs_dir: str, children: Sequence[os.DirEntry], secrets: Dict[bytes, str]
) -> Optional[str]:
    """Why this folder belongs to the service (None when it does not), by its contents.

    ``runyard up``'s data folder holds the key that signs run tokens (``secret_key``), the
    database (``runyard.db``) or the stored snapshots (``snapshots/sha256/``); a worker's
    folder holds its copy of the SDK (``sdk/runyard/``) and its snapshot cache. The secrets
    found there are remembered, so a copy of one elsewhere is left out too.
    """
    names = {child.name: child for child in children}
    why = None
    try:
        key = names.get("secret_key")
        if key is not None and key.is_file(follow_symlinks=False):
            value = _read_small(key.path, 256).strip()
            if _SECRET_KEY_RE.fullmatch(value.decode("ascii", "replace")):
                secrets.setdefault(value, "holds a Runyard secret key")
                why = "a Runyard data folder"
        database = names.get("runyard.db")
        if database is not None and database.is_file(follow_symlinks=False):
            why = "a Runyard data folder"
        if "snapshots" in names and _is_plain_dir(os.path.join(abs_dir, "snapshots", "sha256")):
            why = "a Runyard data folder"
        if (
            why is None
            and "snapshots" in names
            and _is_plain_dir(os.path.join(abs_dir, "sdk", "runyard"))
        ):
            why = "a Runyard worker's folder"
    except OSError:
        pass
    if why is not None and "config.json" in names:
        client_file_secrets(names["config.json"].path, secrets)
    return why


def _is_plain_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_small(path: str, limit: int, follow: bool = False) -> bytes:
    """At most ``limit`` bytes of a file (b"" when it cannot be read)."""
    flags = os.O_RDONLY | O_BINARY | O_CLOEXEC | (0 if follow else O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(limit)
        except OSError:
            return b""


def client_file_secrets(path: str, secrets: Dict[bytes, str], follow: bool = False) -> bool:
    """Whether ``path`` is a Runyard client config holding a token (``url`` and ``token``)
    or a credentials file (``services``); its tokens are remembered as secrets."""
    raw = _read_small(path, _MAX_CLIENT_FILE_BYTES + 1, follow)
    if not raw or len(raw) > _MAX_CLIENT_FILE_BYTES:
        return False
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    tokens = []
    if (data.get("url") or data.get("api_url")) and data.get("token"):
        tokens.append(data["token"])
    for section in ("services", "local_stacks"):
        entries = data.get(section)
        if isinstance(entries, dict):
            tokens.extend(e.get("token") for e in entries.values() if isinstance(e, dict))
    tokens = [t for t in tokens if isinstance(t, str) and t]
    for token in tokens:
        if len(token) >= _MIN_SECRET_CHARS:
            secrets.setdefault(token.encode(), "holds a Runyard token")
    return bool(tokens)


def is_client_file(name: str, path: str, st: os.stat_result, secrets: Dict[bytes, str]) -> bool:
    return (
        name in _CLIENT_FILE_NAMES
        and st.st_size <= _MAX_CLIENT_FILE_BYTES
        and client_file_secrets(path, secrets)
    )


def link_to_secrets(
    path: str, root_real: str, st: os.stat_result, secrets: Dict[bytes, str]
) -> bool:
    """Whether an in-folder link leads to a client config with a token, or into a folder
    that is left out for its secrets (the link's own name says nothing of its target)."""
    target = os.path.realpath(path)
    name = os.path.basename(target)
    if is_client_file(name, target, st, secrets):
        return True
    parts = os.path.relpath(os.path.dirname(target), root_real).split(os.sep)
    folder = root_real
    for part in parts:
        if part in (os.curdir, ""):
            continue
        folder = os.path.join(folder, part)
        if part == RUNYARD_FOLDER:
            return True
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError:
            return True  # cannot tell: leave it out
        if service_folder(folder, children, secrets) is not None:
            return True
    return False


def secrets_to_look_for(tokens: Sequence[str], found: Dict[bytes, str]) -> Dict[bytes, str]:
    """The secrets to look for in file contents, with why a file holding one is left out."""
    needles: Dict[bytes, str] = {}
    for token in tokens:
        if isinstance(token, str) and len(token) >= _MIN_SECRET_CHARS:
            needles.setdefault(token.encode(), "holds your token")
    for secret, why in found.items():
        needles.setdefault(secret, why)
    return needles


class Scanner:
    """A file's stream as the archive reads it, watching for secrets (across chunk edges)."""

    def __init__(self, handle: IO[bytes], needles: Dict[bytes, str]) -> None:
        self._handle = handle
        self._needles = needles
        self._keep = max((len(n) for n in needles), default=1) - 1
        self._tail = b""
        self.found: Optional[str] = None

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk and self.found is None and self._needles:
            edge = self._tail + chunk[: self._keep]
            for needle, why in self._needles.items():
                if needle in chunk or needle in edge:
                    self.found = why
                    break
            if self._keep:
                tail = chunk if len(chunk) >= self._keep else self._tail + chunk
                self._tail = tail[-self._keep :]
        return chunk


def note_left_out(left_out: Sequence[Tuple[str, str]]) -> None:
    """One line on stderr (the SDK's warnings) naming what the snapshot left out."""
    from runyard.tracking.sinks import warn

    shown = [f"{rel} ({why})" for rel, why in left_out[:_MAX_NOTED]]
    if len(left_out) > _MAX_NOTED:
        shown.append(f"and {len(left_out) - _MAX_NOTED} more")
    warn("not in the snapshot, to keep secrets out of runs: " + ", ".join(shown))
