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
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from pathspec import GitIgnoreSpec

from runyard.errors import InvalidInput, SnapshotTooLarge, UnsafeArchive

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

ALWAYS_EXCLUDED = (".git", ".venv", "__pycache__")
# Runyard's own folder in a project (the client config, ``runyard up``'s data): never packed.
RUNYARD_FOLDER = ".runyard"
IGNORE_FILES = (".runyardignore", ".amlignore", ".gitignore")
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
DEFAULT_MAX_FILES = 2000

_MB = 1024 * 1024
_KB = 1024
# Fixed archive settings: changing any of them changes every digest.
_TAR_FORMAT = tarfile.PAX_FORMAT
_COMPRESS_LEVEL = 6
_FILE_MODE = 0o644
_EXEC_MODE = 0o755
_DIR_MODE = 0o755
_COPY_CHUNK = 64 * 1024
# Decompression guards for archives from clients: no single read (a header, in practice)
# may exceed this, and the whole stream may not expand past the member sizes the limits
# allow plus this much header room per entry.
_MAX_SINGLE_READ = 1024 * 1024
_HEADER_ROOM_PER_ENTRY = 8 * 1024
# pathspec marks a match that happened through a directory ("build/" matching
# "build/x.o") with this regex group.
_DIR_MARK = "ps_d"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Secrets: files under these names are read as a Runyard client config or credentials file
# (when small enough to be one); tokens shorter than this are not looked for in file
# contents (every issued token is far longer; a short one would match ordinary text).
_CLIENT_FILE_NAMES = ("config.json", "credentials.json")
_MAX_CLIENT_FILE_BYTES = 1024 * 1024
_MIN_SECRET_CHARS = 16
_SECRET_KEY_RE = re.compile(r"[0-9a-f]{64}")  # what the API writes to <data>/secret_key
_MAX_NOTED = 5

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class SnapshotLimits:
    """Caps on one snapshot, checked on the client before packing and on the server again."""

    max_bytes: int = DEFAULT_MAX_BYTES  # total size of the files (uncompressed)
    max_files: int = DEFAULT_MAX_FILES


@dataclass(frozen=True)
class Snapshot:
    """A packed folder; ``digest`` identifies the code, so equal code gives an equal digest."""

    archive: bytes = field(repr=False)  # gzip-compressed tar, deterministic for the same files
    digest: str  # "sha256:<hex>" of ``archive``
    file_count: int
    total_bytes: int  # sum of file sizes before compression
    # What was left out because it holds secrets (folders end in "/"), sorted.
    left_out: Tuple[str, ...] = ()


class _Entry(NamedTuple):
    """One file to pack: where it is, what it is called in the archive, and its metadata."""

    rel: str  # relative POSIX path inside the snapshot
    path: str  # path on disk
    size: int
    via_symlink: bool  # an in-folder symlink, stored as the content of its target


class _Listing(NamedTuple):
    """What a walk of the folder found: the files to pack, what holds secrets and is left
    out (path, why), and secrets seen on the way that no other file may carry."""

    entries: List[_Entry]
    left_out: List[Tuple[str, str]]
    secrets: Dict[bytes, str]  # secret -> why a file holding it is left out


class _Member(NamedTuple):
    """One validated archive member; ``parts`` are safe path components."""

    info: tarfile.TarInfo
    parts: Tuple[str, ...]
    is_dir: bool


_Rules = List[Tuple[str, Sequence["_Rule"]]]


class _Rule(NamedTuple):
    """One compiled gitignore line: ``ignore`` is False for a ``!`` negation."""

    regex: re.Pattern[str]
    ignore: bool


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def digest_of(archive: bytes) -> str:
    """Content address of an archive, the form the API and the storage use."""
    return "sha256:" + hashlib.sha256(archive).hexdigest()


def list_files(source_directory: PathLike) -> list[str]:
    """Relative POSIX paths of the files a snapshot of this folder contains, sorted."""
    root = _require_directory(source_directory)
    return [entry.rel for entry in _collect(root).entries]


def pack(
    source_directory: PathLike,
    limits: SnapshotLimits = SnapshotLimits(),
    tokens: Sequence[str] = (),
) -> Snapshot:
    """Snapshot a folder; limits are checked from the listing so nothing big is read first.

    ``tokens`` are the caller's: a file holding one is left out (as are Runyard's configs,
    credentials and data folders), and one line on stderr names what was left out.
    """
    root = _require_directory(source_directory)
    listing = _collect(root)
    entries = listing.entries
    _check_folder_limits(root, entries, limits)
    needles = _needles(tokens, listing.secrets)
    left_out = list(listing.left_out)
    while True:
        archive, total_bytes, holding = _build_archive(entries, needles)
        if not holding:
            break
        # Rare: build again without them (they were read once already; the rest too).
        left_out.extend(holding)
        dropped = {rel for rel, _ in holding}
        entries = [e for e in entries if e.rel not in dropped]
    left_out.sort()
    if left_out:
        _note_left_out(left_out)
    return Snapshot(
        archive=archive,
        digest=digest_of(archive),
        file_count=len(entries),
        total_bytes=total_bytes,
        left_out=tuple(rel for rel, _ in left_out),
    )


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
            mode = _EXEC_MODE if member.info.mode & stat.S_IXUSR else _FILE_MODE
            try:
                source = tar.extractfile(member.info)
            except tarfile.TarError as exc:
                raise _corrupt(exc) from exc
            if source is None:  # cannot happen for a validated regular file
                raise UnsafeArchive(f"archive member {member.info.name!r} has no data")
            with source:
                _write_file(os.path.join(dest, *member.parts), source, mode)


# --------------------------------------------------------------------------------------------
# Listing a folder (client side)
# --------------------------------------------------------------------------------------------


def _require_directory(source_directory: PathLike) -> str:
    """Turn a user-given path into a usable folder path, or say clearly what is wrong."""
    try:
        root = os.fspath(source_directory)
    except TypeError:
        raise InvalidInput(
            f"source directory must be a path, not {type(source_directory).__name__}"
        ) from None
    if not os.path.exists(root):
        raise InvalidInput(f"source directory {root!r} does not exist")
    if not os.path.isdir(root):
        raise InvalidInput(f"source directory {root!r} is not a directory")
    return root


def _collect(root: str) -> _Listing:
    """Walk the folder like git does: decide per entry, never descend into ignored folders.
    Runyard's configs, credentials and data folders are left out whatever the rules say."""
    root_real = os.path.realpath(root)
    listing = _Listing([], [], {})
    entries = listing.entries
    stack: list[tuple[str, _Rules]] = [("", [])]
    while stack:
        rel_dir, rules = stack.pop()
        abs_dir = os.path.join(root, *rel_dir.split("/")) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise InvalidInput(f"cannot read folder {abs_dir!r}: {exc.strerror or exc}") from exc
        why = _service_folder(abs_dir, children, listing.secrets)
        if not rel_dir and why is not None:
            raise InvalidInput(
                f"source directory {root!r} is {why}: it holds the service's secrets and is "
                "never packed; submit the folder of your code"
            )
        if rel_dir and why is None and rel_dir.rsplit("/", 1)[-1] == RUNYARD_FOLDER:
            why = "Runyard's own folder"
            _client_file_secrets(os.path.join(abs_dir, "config.json"), listing.secrets)
        if why is not None:
            if children:
                listing.left_out.append((rel_dir + "/", why))
            continue
        own = _load_ignore_file(abs_dir, root_real)
        if own is not None:
            rules = [*rules, (rel_dir, own)]
        for child in children:
            if child.name in ALWAYS_EXCLUDED:
                continue
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            try:
                if child.is_dir(follow_symlinks=False):
                    if not _is_ignored(rel, True, rules):
                        stack.append((rel, rules))
                elif child.is_file(follow_symlinks=False):
                    if not _is_ignored(rel, False, rules):
                        st = child.stat(follow_symlinks=False)
                        if _is_client_file(child.name, child.path, st, listing.secrets):
                            listing.left_out.append((rel, "a Runyard config holding a token"))
                        else:
                            entries.append(_Entry(rel, child.path, st.st_size, False))
                elif child.is_symlink() and not _is_ignored(rel, False, rules):
                    # git treats a symlink as a file, so "logs/" does not match a link named logs.
                    st = _inside_file_stat(child.path, root_real)
                    if st is None:
                        pass
                    elif _link_to_secrets(child.path, root_real, st, listing.secrets):
                        listing.left_out.append((rel, "a link to a Runyard secret"))
                    else:
                        entries.append(_Entry(rel, child.path, st.st_size, True))
                # Anything else (fifo, socket, device) has no content worth shipping.
            except FileNotFoundError:
                continue  # vanished while we were looking: it is simply not part of the snapshot
    entries.sort(key=lambda e: e.rel)
    return listing


# --------------------------------------------------------------------------------------------
# Secrets: what a snapshot never carries (client side)
# --------------------------------------------------------------------------------------------


def _service_folder(
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
        _client_file_secrets(names["config.json"].path, secrets)
    return why


def _is_plain_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_small(path: str, limit: int, follow: bool = False) -> bytes:
    """At most ``limit`` bytes of a file (b"" when it cannot be read)."""
    flags = os.O_RDONLY | _O_BINARY | _O_CLOEXEC | (0 if follow else _O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(limit)
        except OSError:
            return b""


def _client_file_secrets(path: str, secrets: Dict[bytes, str], follow: bool = False) -> bool:
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


def _is_client_file(name: str, path: str, st: os.stat_result, secrets: Dict[bytes, str]) -> bool:
    return (
        name in _CLIENT_FILE_NAMES
        and st.st_size <= _MAX_CLIENT_FILE_BYTES
        and _client_file_secrets(path, secrets)
    )


def _link_to_secrets(
    path: str, root_real: str, st: os.stat_result, secrets: Dict[bytes, str]
) -> bool:
    """Whether an in-folder link leads to a client config with a token, or into a folder
    that is left out for its secrets (the link's own name says nothing of its target)."""
    target = os.path.realpath(path)
    name = os.path.basename(target)
    if _is_client_file(name, target, st, secrets):
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
        if _service_folder(folder, children, secrets) is not None:
            return True
    return False


def _needles(tokens: Sequence[str], found: Dict[bytes, str]) -> Dict[bytes, str]:
    """The secrets to look for in file contents, with why a file holding one is left out."""
    needles: Dict[bytes, str] = {}
    for token in tokens:
        if isinstance(token, str) and len(token) >= _MIN_SECRET_CHARS:
            needles.setdefault(token.encode(), "holds your token")
    for secret, why in found.items():
        needles.setdefault(secret, why)
    return needles


class _Scanner:
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


def _note_left_out(left_out: Sequence[Tuple[str, str]]) -> None:
    """One line on stderr (the SDK's warnings) naming what the snapshot left out."""
    from runyard.tracking.sinks import warn

    shown = [f"{rel} ({why})" for rel, why in left_out[:_MAX_NOTED]]
    if len(left_out) > _MAX_NOTED:
        shown.append(f"and {len(left_out) - _MAX_NOTED} more")
    warn("not in the snapshot, to keep secrets out of runs: " + ", ".join(shown))


def _is_exec(st: os.stat_result) -> bool:
    """Only the owner's execute bit survives into the archive (0o755 vs 0o644)."""
    return bool(st.st_mode & stat.S_IXUSR)


def _inside_file_stat(path: str, root_real: str) -> Optional[os.stat_result]:
    """Stat of a symlink's target if it is a regular file inside the folder, else None.

    Links leading out of the folder would leak files the user did not mean to upload, and
    directory links are never followed, so there are no loops.
    """
    target = os.path.realpath(path)
    try:
        inside = os.path.commonpath([root_real, target]) == root_real
    except ValueError:  # different drives on Windows
        inside = False
    if not inside or target == root_real:
        return None
    try:
        st = os.stat(target)
    except OSError:
        return None  # dangling link
    return st if stat.S_ISREG(st.st_mode) else None


def _load_ignore_file(abs_dir: str, root_real: str) -> Optional[Sequence[_Rule]]:
    """Rules of the one ignore file a folder uses: .runyardignore, else .amlignore, else .gitignore.

    Only one is used, as in Azure ML, so an .amlignore written for Azure keeps its meaning.
    """
    for name in IGNORE_FILES:
        path = os.path.join(abs_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            if _inside_file_stat(path, root_real) is None:
                continue
        elif not stat.S_ISREG(st.st_mode):
            continue
        try:
            with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            raise InvalidInput(f"cannot read ignore file {path!r}: {exc.strerror or exc}") from exc
        try:
            spec = GitIgnoreSpec.from_lines(lines)
        except (ValueError, re.error) as exc:
            raise InvalidInput(f"bad pattern in ignore file {path!r}: {exc}") from exc
        return [
            _Rule(pattern.regex, bool(pattern.include))
            for pattern in spec.patterns
            if pattern.include is not None and getattr(pattern, "regex", None) is not None
        ]
    return None


def _is_ignored(rel: str, is_dir: bool, rules: _Rules) -> bool:
    """Git's verdict for one path: the deepest ignore file with a matching line decides,
    and inside a file the last matching line wins (so ``!keep.txt`` re-includes)."""
    for base, file_rules in reversed(rules):
        sub = rel[len(base) + 1 :] if base else rel
        for rule in reversed(file_rules):
            if _rule_matches(rule.regex, sub, is_dir):
                return rule.ignore
    return False


def _rule_matches(regex: re.Pattern[str], rel: str, is_dir: bool) -> bool:
    """Whether a pattern matches this very path, not merely one of its parent folders.

    pathspec's regexes also match everything below a matching folder; since the walk prunes
    ignored folders itself, a match that only came through a parent (the ``ps_d`` group
    ending before the end of the path) must not count, or ``!*/`` would re-include files.
    """
    match = regex.search(rel)
    if match is not None and not match.groupdict().get(_DIR_MARK):
        return True
    if not is_dir:
        return False
    slashed = rel + "/"
    # Retry from the last slash so an unanchored pattern like "*/" tests this folder's own
    # name rather than the first folder on the path.
    for start in (0, len(rel)):
        match = regex.search(slashed, start)
        if (
            match is not None
            and match.groupdict().get(_DIR_MARK)
            and match.end(_DIR_MARK) == len(slashed)
        ):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Limits (client side)
# --------------------------------------------------------------------------------------------


def _human_size(size: int) -> str:
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


def _check_folder_limits(root: str, entries: Sequence[_Entry], limits: SnapshotLimits) -> None:
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
            f"{_human_size(total)} of files ({total} bytes), over the limit of "
            f"{_human_size(limits.max_bytes)} ({limits.max_bytes} bytes); largest files: "
            + ", ".join(f"{e.rel} ({_human_size(e.size)})" for e in largest)
        )
    if problems:
        raise SnapshotTooLarge(
            f"snapshot of {root!r} is too large: "
            + ". Also ".join(problems)
            + ". Add what the run does not need to .runyardignore to leave it out."
        )


# --------------------------------------------------------------------------------------------
# Building the archive (client side)
# --------------------------------------------------------------------------------------------


def _build_archive(
    entries: Sequence[_Entry], needles: Dict[bytes, str]
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
    tar: Optional[tarfile.TarFile], entry: _Entry, needles: Dict[bytes, str]
) -> tuple[int, Optional[str]]:
    """Add one file with fixed metadata (only content and the exec bit vary), looking for
    secrets as it is read; returns its size and why it must be left out (None: it is fine).
    Without ``tar`` the file is only read for secrets."""
    flags = os.O_RDONLY | _O_BINARY | _O_CLOEXEC
    if not entry.via_symlink:
        flags |= _O_NOFOLLOW  # it was a regular file when listed; keep it so
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
        info.mode = _EXEC_MODE if _is_exec(st) else _FILE_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        scanner = _Scanner(handle, needles)
        try:
            if tar is not None:
                tar.addfile(info, scanner)  # type: ignore[arg-type]
            elif needles:
                while scanner.found is None and scanner.read(_COPY_CHUNK):
                    pass
        except (OSError, tarfile.TarError) as exc:
            raise InvalidInput(f"cannot read {entry.rel!r}: {exc}") from exc
    return st.st_size, scanner.found


# --------------------------------------------------------------------------------------------
# Reading archives from clients (server / worker side)
# --------------------------------------------------------------------------------------------


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
                f"archive expands to more than {_human_size(self._budget)}, "
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
                f"archive has a header or block of {_human_size(size)}, larger than any "
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
                    f"{_human_size(limits.max_bytes)} ({limits.max_bytes} bytes), passed at "
                    f"member {info.name!r} ({_human_size(info.size)})"
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
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY | _O_CLOEXEC, 0o600
    )
    with os.fdopen(fd, "wb") as handle:
        while True:
            chunk = source.read(_COPY_CHUNK)
            if not chunk:
                break
            handle.write(chunk)
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), mode)
    if not hasattr(os, "fchmod"):
        os.chmod(path, mode)
