"""How big a snapshot may be, and a refusal that names what to put in .runyardignore.

The same limits are checked on the client before packing (from the listing, so nothing big
is read first) and on the server again when an archive arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Sequence

from runyard.errors import SnapshotTooLarge

if TYPE_CHECKING:  # the server side checks limits without walking a folder
    from runyard.snapshot.listing import Entry

DEFAULT_MAX_BYTES = 300 * 1024 * 1024
DEFAULT_MAX_FILES = 2000

_MB = 1024 * 1024
_KB = 1024


@dataclass(frozen=True)
class SnapshotLimits:
    """Caps on one snapshot, checked on the client before packing and on the server again."""

    max_bytes: int = DEFAULT_MAX_BYTES  # total size of the files (uncompressed)
    max_files: int = DEFAULT_MAX_FILES


def human_size(size: int) -> str:
    """Sizes for people, in binary units (1 MB = 1024 * 1024 bytes)."""
    if size >= _MB:
        return f"{size / _MB:.1f} MB"
    if size >= _KB:
        return f"{size / _KB:.1f} KB"
    return f"{size} B"


def _busiest_folders(paths: Sequence[str], how_many: int = 5) -> list[tuple[str, int]]:
    """Folders to suggest for .runyardignore, by number of files below them.

    A folder is skipped when one subfolder holds most of its files (the subfolder is the more
    precise hint, e.g. ``project/images/`` rather than ``project/``), and a folder inside one
    already listed is not listed again.
    """
    counts: Dict[str, int] = {}
    for path in paths:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            counts[folder] = counts.get(folder, 0) + 1
    biggest_child: Dict[str, int] = {}
    for folder, count in counts.items():
        if "/" in folder:
            parent = folder.rsplit("/", 1)[0]
            biggest_child[parent] = max(biggest_child.get(parent, 0), count)
    candidates = [f for f in counts if biggest_child.get(f, 0) * 2 <= counts[f]]
    candidates.sort(key=lambda f: (-counts[f], f))
    chosen: list[str] = []
    for folder in candidates:
        if any(folder.startswith(done + "/") for done in chosen):
            continue
        chosen.append(folder)
        if len(chosen) == how_many:
            break
    return [(folder + "/", counts[folder]) for folder in chosen]


def check_folder_limits(root: str, entries: Sequence[Entry], limits: SnapshotLimits) -> None:
    """Refuse before reading any file, naming what to put in .runyardignore."""
    problems: list[str] = []
    if len(entries) > limits.max_files:
        problem = f"{len(entries)} files, over the limit of {limits.max_files} files"
        busiest = _busiest_folders([e.rel for e in entries])
        if busiest:
            problem += "; folders with the most files: " + ", ".join(
                f"{folder} ({count} files)" for folder, count in busiest
            )
        problems.append(problem)
    total = sum(e.size for e in entries)
    if total > limits.max_bytes:
        largest = sorted(entries, key=lambda e: (-e.size, e.rel))[:5]
        problems.append(
            f"{human_size(total)} of files ({total} bytes), over the limit of "
            f"{human_size(limits.max_bytes)} ({limits.max_bytes} bytes); largest files: "
            + ", ".join(f"{e.rel} ({human_size(e.size)})" for e in largest)
        )
    if problems:
        raise SnapshotTooLarge(
            f"snapshot of {root!r} is too large: "
            + ". Also ".join(problems)
            + ". Add what the run does not need to .runyardignore to leave it out."
        )
