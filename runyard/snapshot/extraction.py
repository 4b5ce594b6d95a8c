"""Reading archives from clients (server / worker side), as if every one were hostile.

Headers are validated one by one as the stream is read, through a gunzip that refuses to
expand past what the limits allow, and nothing is written unless every member passed;
writes never follow a symlink already present in the destination.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib
from typing import IO, Dict, NamedTuple, Optional, Sequence, Tuple

from runyard.errors import InvalidInput, SnapshotTooLarge, UnsafeArchive
from runyard.snapshot.files import (
    COPY_CHUNK,
    EXEC_MODE,
    FILE_MODE,
    O_BINARY,
    O_CLOEXEC,
    O_NOFOLLOW,
    PathLike,
)
from runyard.snapshot.limits import SnapshotLimits, human_size

_DIR_MODE = 0o755  # of the folders extraction makes
# Decompression guards for archives from clients: no single read (a header, in practice)
# may exceed this, and the whole stream may not expand past the member sizes the limits
# allow plus this much header room per entry.
_MAX_SINGLE_READ = 1024 * 1024
_HEADER_ROOM_PER_ENTRY = 8 * 1024


class _Member(NamedTuple):
    """One validated archive member; ``parts`` are safe path components."""

    info: tarfile.TarInfo
    parts: Tuple[str, ...]
    is_dir: bool


def inspect_archive(archive: bytes, limits: SnapshotLimits = SnapshotLimits()) -> tuple[int, int]:
    """Validate an archive received from a client WITHOUT extracting.

    Returns (file_count, total_bytes). Headers are checked one by one as the stream is read and
    file data is skipped, never held, so the API can refuse a bad upload before storing it.
    """
    with _OpenArchive(archive, limits) as tar:
        members = _read_members(tar, limits)
    files = [m for m in members if not m.is_dir]
    return len(files), sum(m.info.size for m in files)


def extract(
    archive: bytes, destination: PathLike, limits: SnapshotLimits = SnapshotLimits()
) -> None:
    """Validate fully first (inspect_archive), then extract into destination (created if missing).

    Nothing is written unless every member passed, so a bad archive leaves no half-written
    tree behind; writes never follow a symlink already present in the destination.
    """
    dest = os.path.abspath(os.fspath(destination))
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise InvalidInput(f"destination {dest!r} exists and is not a directory")
    with _OpenArchive(archive, limits) as tar:
        members = _read_members(tar, limits)
        _check_destination(dest, members)
        os.makedirs(dest, exist_ok=True)
        made: set[str] = set()
        for member in members:
            if member.is_dir:
                _make_dirs(dest, member.parts, made)
                continue
            _make_dirs(dest, member.parts[:-1], made)
            mode = EXEC_MODE if member.info.mode & stat.S_IXUSR else FILE_MODE
            try:
                source = tar.extractfile(member.info)
            except tarfile.TarError as exc:
                raise _corrupt(exc) from exc
            if source is None:  # cannot happen for a validated regular file
                raise UnsafeArchive(f"archive member {member.info.name!r} has no data")
            with source:
                _write_file(os.path.join(dest, *member.parts), source, mode)


class _BoundedGunzip:
    """Seekable gunzip view that refuses to expand past a budget.

    tarfile reads a pax or GNU long-name header in one call of whatever size the header
    claims, so a few kilobytes of gzip could otherwise make it allocate gigabytes.
    """

    def __init__(self, archive: bytes, budget: int) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(archive), mode="rb")
        self._budget = budget

    def _guard(self, end: int) -> None:
        if end > self._budget:
            raise SnapshotTooLarge(
                f"archive expands to more than {human_size(self._budget)}, "
                "more than its file limits allow"
            )

    def tell(self) -> int:
        return self._gz.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._gz.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("can only seek from the start or the current position")
        self._guard(offset)
        try:
            return self._gz.seek(offset)
        except (OSError, EOFError, zlib.error) as exc:
            raise _corrupt(exc) from exc

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._budget - self._gz.tell() + 1
        if size > _MAX_SINGLE_READ:
            raise UnsafeArchive(
                f"archive has a header or block of {human_size(size)}, larger than any "
                "snapshot needs"
            )
        self._guard(self._gz.tell() + size)
        try:
            return self._gz.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise _corrupt(exc) from exc

    def close(self) -> None:
        self._gz.close()


def _corrupt(exc: BaseException) -> UnsafeArchive:
    """One message for anything that is not a well-formed gzip tar."""
    return UnsafeArchive(f"not a gzip-compressed tar archive, or it is corrupt or truncated: {exc}")


class _OpenArchive:
    """Open client bytes as a tar over a bounded gunzip, mapping format errors to UnsafeArchive."""

    def __init__(self, archive: bytes, limits: SnapshotLimits) -> None:
        if not isinstance(archive, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"archive must be bytes, not {type(archive).__name__}")
        data = bytes(archive)
        if data[:2] != b"\x1f\x8b":
            raise UnsafeArchive("not a gzip-compressed tar archive")
        entries = 2 * limits.max_files + 2  # files, plus as many directory entries
        budget = limits.max_bytes + entries * _HEADER_ROOM_PER_ENTRY + tarfile.RECORDSIZE
        self._stream = _BoundedGunzip(data, budget)
        self._tar: Optional[tarfile.TarFile] = None

    def __enter__(self) -> tarfile.TarFile:
        try:
            self._tar = tarfile.open(fileobj=self._stream, mode="r:")
        except tarfile.TarError as exc:
            self._stream.close()
            raise _corrupt(exc) from exc
        except BaseException:
            self._stream.close()
            raise
        return self._tar

    def __exit__(self, *exc_info: object) -> None:
        if self._tar is not None:
            self._tar.close()
        self._stream.close()


def _read_members(tar: tarfile.TarFile, limits: SnapshotLimits) -> list[_Member]:
    """Validate every header, streaming; limits are enforced before any member's data is read."""
    members: list[_Member] = []
    seen: Dict[Tuple[str, ...], bool] = {}  # parts -> is_dir
    file_count = 0
    dir_count = 0
    total = 0
    while True:
        try:
            info = tar.next()
        except tarfile.TarError as exc:
            raise _corrupt(exc) from exc
        if info is None:
            break
        parts = _safe_parts(info)
        is_dir = info.isdir()
        if is_dir:
            dir_count += 1
            if dir_count > limits.max_files:
                raise SnapshotTooLarge(
                    f"archive has more than {limits.max_files} directory entries"
                )
            if not parts:
                continue  # "./", the archive root itself
        else:
            file_count += 1
            total += info.size
            if file_count > limits.max_files:
                raise SnapshotTooLarge(
                    f"archive has more files than the limit of {limits.max_files} "
                    f"(passed at member {info.name!r})"
                )
            if total > limits.max_bytes:
                raise SnapshotTooLarge(
                    f"archive files add up to more than the limit of "
                    f"{human_size(limits.max_bytes)} ({limits.max_bytes} bytes), passed at "
                    f"member {info.name!r} ({human_size(info.size)})"
                )
        if parts in seen:
            raise UnsafeArchive(f"archive member {info.name!r} appears more than once")
        seen[parts] = is_dir
        members.append(_Member(info, parts, is_dir))
    # A member inside a file ("a" is a file and "a/b" exists) could not be extracted.
    for parts in seen:
        for depth in range(1, len(parts)):
            if seen.get(parts[:depth]) is False:
                raise UnsafeArchive(
                    f"archive member {'/'.join(parts)!r} is inside "
                    f"{'/'.join(parts[:depth])!r}, which is a file"
                )
    return members


def _safe_parts(info: tarfile.TarInfo) -> Tuple[str, ...]:
    """Path components of a member, or UnsafeArchive if it could land outside the destination."""
    name = info.name
    refuse = f"refusing archive member {name!r}"
    if info.issym() or info.islnk():
        raise UnsafeArchive(f"{refuse}: links are not allowed (-> {info.linkname!r})")
    if info.ischr() or info.isblk():
        raise UnsafeArchive(f"{refuse}: device files are not allowed")
    if info.isfifo():
        raise UnsafeArchive(f"{refuse}: fifos are not allowed")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise UnsafeArchive(f"{refuse}: unsupported member type {info.type!r}")
    if getattr(info, "sparse", None) is not None:
        raise UnsafeArchive(f"{refuse}: sparse files are not allowed")
    if not name:
        raise UnsafeArchive("refusing archive member with an empty name")
    if "\x00" in name:
        raise UnsafeArchive(f"{refuse}: NUL byte in name")
    if "\\" in name:
        raise UnsafeArchive(f"{refuse}: backslash in name")
    if name.startswith("/"):
        raise UnsafeArchive(f"{refuse}: absolute path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise UnsafeArchive(f"{refuse}: drive-letter path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{refuse}: '..' in path")
    if not parts and not info.isdir():
        raise UnsafeArchive(f"{refuse}: empty path")
    return parts


def _check_destination(dest: str, members: Sequence[_Member]) -> None:
    """Everything that could stop extraction halfway is checked before the first write."""
    checked: set[Tuple[str, ...]] = set()
    for member in members:
        for depth in range(1, len(member.parts) + 1):
            prefix = member.parts[:depth]
            if prefix in checked:
                continue
            path = os.path.join(dest, *prefix)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing deeper can exist either
            checked.add(prefix)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchive(
                    f"refusing to extract {member.info.name!r}: {'/'.join(prefix)!r} in the "
                    "destination is a symlink"
                )
            wants_dir = member.is_dir or depth < len(member.parts)
            if wants_dir != stat.S_ISDIR(st.st_mode):
                what = "is not a directory" if wants_dir else "is a directory"
                raise InvalidInput(f"cannot extract {member.info.name!r}: {path!r} {what}")
    # Second line of defence: the standard library's own rules for untrusted archives.
    data_filter = getattr(tarfile, "data_filter", None)  # Python 3.12, 3.11.4+, 3.8.17+
    if data_filter is not None:
        for member in members:
            try:
                data_filter(member.info, dest)
            except tarfile.FilterError as exc:
                raise UnsafeArchive(f"refusing archive member {member.info.name!r}: {exc}") from exc


def _make_dirs(dest: str, parts: Sequence[str], made: set[str]) -> None:
    """Create the folders on a member's path, refusing to pass through a symlink."""
    for depth in range(1, len(parts) + 1):
        path = os.path.join(dest, *parts[:depth])
        if path in made:
            continue
        try:
            os.mkdir(path, _DIR_MODE)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise UnsafeArchive(
                    f"refusing to extract into {path!r}: it is not a plain directory"
                ) from None
        made.add(path)


def _write_file(path: str, source: IO[bytes], mode: int) -> None:
    """Write one file without following a link at ``path``, with exactly ``mode``."""
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(existing.st_mode):
            raise InvalidInput(f"cannot extract to {path!r}: it is a directory")
        os.unlink(path)  # replaces a file or link rather than writing through it
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_BINARY | O_CLOEXEC, 0o600
    )
    with os.fdopen(fd, "wb") as handle:
        while True:
            chunk = source.read(COPY_CHUNK)
            if not chunk:
                break
            handle.write(chunk)
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), mode)
    if not hasattr(os, "fchmod"):
        os.chmod(path, mode)
