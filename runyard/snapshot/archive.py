"""Building the archive (client side): a gzip tar that is byte-for-byte the same for the
same file contents (fixed order, times, owners and modes), so its digest identifies the
code and identical submissions share it."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from typing import Dict, Optional, Sequence

from runyard.errors import InvalidInput
from runyard.snapshot.files import COPY_CHUNK, EXEC_MODE, FILE_MODE, O_BINARY, O_CLOEXEC, O_NOFOLLOW
from runyard.snapshot.listing import Entry
from runyard.snapshot.secrets import Scanner

# Fixed archive settings: changing any of them (or the modes in files.py) changes every digest.
_TAR_FORMAT = tarfile.PAX_FORMAT
_COMPRESS_LEVEL = 6


def build_archive(
    entries: Sequence[Entry], needles: Dict[bytes, str]
) -> tuple[bytes, int, list[tuple[str, str]]]:
    """Deterministic gzip tar of the entries; returns the bytes, the total file size and the
    files found to hold a secret (path, why). Once one is found the archive must be built
    again without it, so the files after it are only read for secrets."""
    buffer = io.BytesIO()
    total = 0
    holding: list[tuple[str, str]] = []
    # No mtime and no file name in the gzip header: both would change the digest.
    gz = gzip.GzipFile(
        fileobj=buffer, mode="wb", mtime=0, filename="", compresslevel=_COMPRESS_LEVEL
    )
    with gz, tarfile.open(fileobj=gz, mode="w", format=_TAR_FORMAT) as tar:
        for entry in entries:
            size, why = _add_file(None if holding else tar, entry, needles)
            total += size
            if why is not None:
                holding.append((entry.rel, why))
    return buffer.getvalue(), total, holding


def _add_file(
    tar: Optional[tarfile.TarFile], entry: Entry, needles: Dict[bytes, str]
) -> tuple[int, Optional[str]]:
    """Add one file with fixed metadata (only content and the exec bit vary), looking for
    secrets as it is read; returns its size and why it must be left out (None: it is fine).
    Without ``tar`` the file is only read for secrets."""
    flags = os.O_RDONLY | O_BINARY | O_CLOEXEC
    if not entry.via_symlink:
        flags |= O_NOFOLLOW  # it was a regular file when listed; keep it so
    try:
        fd = os.open(entry.path, flags)
    except OSError as exc:
        raise InvalidInput(f"cannot read {entry.rel!r}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{entry.rel!r} changed while packing; try again")
        info = tarfile.TarInfo(entry.rel)
        info.size = st.st_size
        info.mtime = 0
        info.mode = EXEC_MODE if _is_exec(st) else FILE_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        scanner = Scanner(handle, needles)
        try:
            if tar is not None:
                tar.addfile(info, scanner)  # type: ignore[arg-type]
            elif needles:
                while scanner.found is None and scanner.read(COPY_CHUNK):
                    pass
        except (OSError, tarfile.TarError) as exc:
            raise InvalidInput(f"cannot read {entry.rel!r}: {exc}") from exc
    return st.st_size, scanner.found


def _is_exec(st: os.stat_result) -> bool:
    """Only the owner's execute bit survives into the archive (0o755 vs 0o644)."""
    return bool(st.st_mode & stat.S_IXUSR)
