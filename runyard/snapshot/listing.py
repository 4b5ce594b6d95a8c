"""Which files a snapshot of a folder holds: a walk that honours ignore files the way Azure
ML does (one of .runyardignore, .amlignore, .gitignore per folder, with git's rules), so
users can reuse what they already wrote, and that leaves out what holds secrets."""

from __future__ import annotations

import os
import re
import stat
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from pathspec import GitIgnoreSpec

from runyard.errors import InvalidInput
from runyard.snapshot.files import PathLike
from runyard.snapshot.secrets import (
    RUNYARD_FOLDER,
    client_file_secrets,
    is_client_file,
    link_to_secrets,
    service_folder,
)

ALWAYS_EXCLUDED = (".git", ".venv", "__pycache__")
IGNORE_FILES = (".runyardignore", ".amlignore", ".gitignore")
# pathspec marks a match that happened through a directory ("build/" matching
# "build/x.o") with this regex group.
_DIR_MARK = "ps_d"


class Entry(NamedTuple):
    """One file to pack: where it is, what it is called in the archive, and its metadata."""

    rel: str  # relative POSIX path inside the snapshot
    path: str  # path on disk
    size: int
    via_symlink: bool  # an in-folder symlink, stored as the content of its target


class Listing(NamedTuple):
    """What a walk of the folder found: the files to pack, what holds secrets and is left
    out (path, why), and secrets seen on the way that no other file may carry."""

    entries: List[Entry]
    left_out: List[Tuple[str, str]]
    secrets: Dict[bytes, str]  # secret -> why a file holding it is left out


_Rules = List[Tuple[str, Sequence["_Rule"]]]


class _Rule(NamedTuple):
    """One compiled gitignore line: ``ignore`` is False for a ``!`` negation."""

    regex: re.Pattern[str]
    ignore: bool


def require_directory(source_directory: PathLike) -> str:
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


def collect(root: str) -> Listing:
    """Walk the folder like git does: decide per entry, never descend into ignored folders.
    Runyard's configs, credentials and data folders are left out whatever the rules say."""
    root_real = os.path.realpath(root)
    listing = Listing([], [], {})
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
        why = service_folder(abs_dir, children, listing.secrets)
        if not rel_dir and why is not None:
            raise InvalidInput(
                f"source directory {root!r} is {why}: it holds the service's secrets and is "
                "never packed; submit the folder of your code"
            )
        if rel_dir and why is None and rel_dir.rsplit("/", 1)[-1] == RUNYARD_FOLDER:
            why = "Runyard's own folder"
            client_file_secrets(os.path.join(abs_dir, "config.json"), listing.secrets)
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
                        if is_client_file(child.name, child.path, st, listing.secrets):
                            listing.left_out.append((rel, "a Runyard config holding a token"))
                        else:
                            entries.append(Entry(rel, child.path, st.st_size, False))
                elif child.is_symlink() and not _is_ignored(rel, False, rules):
                    # git treats a symlink as a file, so "logs/" does not match a link named logs.
                    st = _inside_file_stat(child.path, root_real)
                    if st is None:
                        pass
                    elif link_to_secrets(child.path, root_real, st, listing.secrets):
                        listing.left_out.append((rel, "a link to a Runyard secret"))
                    else:
                        entries.append(Entry(rel, child.path, st.st_size, True))
                # Anything else (fifo, socket, device) has no content worth shipping.
            except FileNotFoundError:
                continue  # vanished while we were looking: it is simply not part of the snapshot
    entries.sort(key=lambda e: e.rel)
    return listing


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
