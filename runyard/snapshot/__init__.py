"""Code snapshots: pack a source folder into a deterministic archive, and unpack it safely.

The client packs the folder a run was submitted from (honouring ignore files the way Azure ML
does, so users can reuse their ``.amlignore``/``.gitignore``). The server and the workers only
ever receive bytes from a client, so every archive is validated as if it were hostile before a
single byte is written to disk.

The archive is byte-for-byte deterministic for the same file contents (fixed order, times,
owners and modes), so its digest identifies the code and identical submissions can share it.

Whatever the ignore files say, a snapshot never carries Runyard's own secrets: a client config
or credentials file holding a token, a folder of the service's data (``runyard up``'s: its
``secret_key``, its database, stored snapshots) or a worker's folder, wherever they sit in the
tree, nor any file whose content holds the caller's token (looked for while the file is read
for the archive, so each file is still read once). ``pack`` says on stderr what it left out.

This module holds the public API; each concept behind it has its own module:
``listing`` (the walk and the ignore files), ``secrets`` (what is never packed), ``limits``
(how big a snapshot may be), ``archive`` (the deterministic tar.gz), ``extraction``
(validating and unpacking an archive from a client) and ``files`` (how files are opened).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence, Tuple

from runyard.snapshot.archive import build_archive
from runyard.snapshot.extraction import extract, inspect_archive
from runyard.snapshot.files import PathLike
from runyard.snapshot.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    SnapshotLimits,
    check_folder_limits,
)
from runyard.snapshot.listing import ALWAYS_EXCLUDED, IGNORE_FILES, collect, require_directory
from runyard.snapshot.secrets import RUNYARD_FOLDER, note_left_out, secrets_to_look_for

__all__ = [
    "ALWAYS_EXCLUDED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "IGNORE_FILES",
    "RUNYARD_FOLDER",
    "Snapshot",
    "SnapshotLimits",
    "digest_of",
    "extract",
    "inspect_archive",
    "list_files",
    "pack",
]


@dataclass(frozen=True)
class Snapshot:
    """A packed folder; ``digest`` identifies the code, so equal code gives an equal digest."""

    archive: bytes = field(repr=False)  # gzip-compressed tar, deterministic for the same files
    digest: str  # "sha256:<hex>" of ``archive``
    file_count: int
    total_bytes: int  # sum of file sizes before compression
    # What was left out because it holds secrets (folders end in "/"), sorted.
    left_out: Tuple[str, ...] = ()


def digest_of(archive: bytes) -> str:
    """Content address of an archive, the form the API and the storage use."""
    return "sha256:" + hashlib.sha256(archive).hexdigest()


def list_files(source_directory: PathLike) -> list[str]:
    """Relative POSIX paths of the files a snapshot of this folder contains, sorted."""
    root = require_directory(source_directory)
    return [entry.rel for entry in collect(root).entries]


def pack(
    source_directory: PathLike,
    limits: SnapshotLimits = SnapshotLimits(),
    tokens: Sequence[str] = (),
) -> Snapshot:
    """Snapshot a folder; limits are checked from the listing so nothing big is read first.

    ``tokens`` are the caller's: a file holding one is left out (as are Runyard's configs,
    credentials and data folders), and one line on stderr names what was left out.
    """
    root = require_directory(source_directory)
    listing = collect(root)
    entries = listing.entries
    check_folder_limits(root, entries, limits)
    needles = secrets_to_look_for(tokens, listing.secrets)
    left_out = list(listing.left_out)
    while True:
        archive, total_bytes, holding = build_archive(entries, needles)
        if not holding:
            break
        # Rare: build again without them (they were read once already; the rest too).
        left_out.extend(holding)
        dropped = {rel for rel, _ in holding}
        entries = [e for e in entries if e.rel not in dropped]
    left_out.sort()
    if left_out:
        note_left_out(left_out)
    return Snapshot(
        archive=archive,
        digest=digest_of(archive),
        file_count=len(entries),
        total_bytes=total_bytes,
        left_out=tuple(rel for rel, _ in left_out),
    )
