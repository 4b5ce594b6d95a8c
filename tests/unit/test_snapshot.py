"""Snapshots: ignore rules, limits, deterministic packing, and refusing hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runyard.errors import InvalidInput, SnapshotTooLarge, UnsafeArchive
from runyard.snapshot import (
    ALWAYS_EXCLUDED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    IGNORE_FILES,
    Snapshot,
    SnapshotLimits,
    digest_of,
    extract,
    inspect_archive,
    list_files,
    pack,
)

MB = 1024 * 1024


def write(root: Path, rel: str, content: bytes | str = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def sparse(root: Path, rel: str, size: int) -> Path:
    """A file that reports `size` bytes without using the disk (limits only stat files)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tgz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, data: bytes = b"data", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def special(name: str, kind: bytes, **attrs: object) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, None


def members_of(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getmembers()


# --------------------------------------------------------------------------------------------
# Public constants
# --------------------------------------------------------------------------------------------


def test_public_constants_have_the_documented_values() -> None:
    assert ALWAYS_EXCLUDED == (".git", ".venv", "__pycache__")
    assert IGNORE_FILES == (".runyardignore", ".amlignore", ".gitignore")
    assert DEFAULT_MAX_BYTES == 300 * MB
    assert DEFAULT_MAX_FILES == 2000
    assert SnapshotLimits() == SnapshotLimits(max_bytes=300 * MB, max_files=2000)


def test_snapshot_repr_does_not_dump_the_archive(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "hello")
    snap = pack(tmp_path)
    assert "archive" not in repr(snap)
    assert isinstance(snap, Snapshot)


# --------------------------------------------------------------------------------------------
# Ignore files
# --------------------------------------------------------------------------------------------


def test_gitignored_files_are_left_out(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\noutputs/\n")
    write(tmp_path, "train.py")
    write(tmp_path, "debug.log")
    write(tmp_path, "pkg/run.log")
    write(tmp_path, "outputs/model.pt")

    assert list_files(tmp_path) == [".gitignore", "train.py"]


def test_amlignore_is_used_instead_of_gitignore(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, ".amlignore", "*.csv\n")
    write(tmp_path, "debug.log")
    write(tmp_path, "data.csv")

    assert list_files(tmp_path) == [".amlignore", ".gitignore", "debug.log"]


def test_runyardignore_is_used_instead_of_amlignore_and_gitignore(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, ".amlignore", "*.csv\n")
    write(tmp_path, ".runyardignore", "*.bin\n")
    write(tmp_path, "debug.log")
    write(tmp_path, "data.csv")
    write(tmp_path, "weights.bin")

    assert list_files(tmp_path) == [
        ".amlignore",
        ".gitignore",
        ".runyardignore",
        "data.csv",
        "debug.log",
    ]


def test_ignore_files_themselves_are_included(tmp_path: Path) -> None:
    write(tmp_path, ".runyardignore", "secret.txt\n")
    write(tmp_path, "sub/.gitignore", "*.tmp\n")
    write(tmp_path, "secret.txt")

    assert list_files(tmp_path) == [".runyardignore", "sub/.gitignore"]


def test_nested_ignore_file_applies_to_its_own_subtree_relative_to_itself(
    tmp_path: Path,
) -> None:
    write(tmp_path, "sub/.gitignore", "*.tmp\n/local.txt\n")
    write(tmp_path, "local.txt")
    write(tmp_path, "top.tmp")
    write(tmp_path, "sub/local.txt")
    write(tmp_path, "sub/x.tmp")
    write(tmp_path, "sub/deeper/local.txt")
    write(tmp_path, "sub/deeper/y.tmp")

    assert list_files(tmp_path) == [
        "local.txt",
        "sub/.gitignore",
        "sub/deeper/local.txt",
        "top.tmp",
    ]


def test_nested_ignore_file_can_reinclude_what_a_parent_ignores(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.csv\n")
    write(tmp_path, "sub/.gitignore", "!keep.csv\n")
    write(tmp_path, "top.csv")
    write(tmp_path, "sub/keep.csv")
    write(tmp_path, "sub/other.csv")

    assert list_files(tmp_path) == [".gitignore", "sub/.gitignore", "sub/keep.csv"]


def test_each_folder_picks_its_own_ignore_file_by_precedence(tmp_path: Path) -> None:
    write(tmp_path, ".amlignore", "*.log\n")
    write(tmp_path, "sub/.gitignore", "*.csv\n")
    write(tmp_path, "sub/.runyardignore", "*.bin\n")
    write(tmp_path, "a.log")
    write(tmp_path, "sub/b.log")
    write(tmp_path, "sub/c.csv")
    write(tmp_path, "sub/d.bin")

    # sub/ uses its .runyardignore (not its .gitignore); the root .amlignore still applies.
    assert list_files(tmp_path) == [
        ".amlignore",
        "sub/.gitignore",
        "sub/.runyardignore",
        "sub/c.csv",
    ]


def test_negation_keeps_a_file_an_earlier_line_ignored(tmp_path: Path) -> None:
    write(tmp_path, ".runyardignore", "*.txt\n!keep.txt\n")
    write(tmp_path, "drop.txt")
    write(tmp_path, "keep.txt")
    write(tmp_path, "sub/keep.txt")
    write(tmp_path, "sub/drop.txt")

    assert list_files(tmp_path) == [".runyardignore", "keep.txt", "sub/keep.txt"]


def test_whitelist_pattern_keeps_only_the_listed_files(tmp_path: Path) -> None:
    write(tmp_path, ".runyardignore", "*\n!*/\n!*.py\n")
    write(tmp_path, "train.py")
    write(tmp_path, "notes.md")
    write(tmp_path, "src/model.py")
    write(tmp_path, "src/data.csv")

    assert list_files(tmp_path) == ["src/model.py", "train.py"]


def test_folder_contents_can_be_ignored_except_one_subfolder(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "data/*\n!data/keep/\n")
    write(tmp_path, "data/big.bin")
    write(tmp_path, "data/other/x.bin")
    write(tmp_path, "data/keep/labels.csv")

    assert list_files(tmp_path) == [".gitignore", "data/keep/labels.csv"]


def test_directory_only_pattern_does_not_drop_a_file_of_that_name(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "build/\n")
    write(tmp_path, "build/out.o")
    write(tmp_path, "docs/build")

    assert list_files(tmp_path) == [".gitignore", "docs/build"]


def test_git_venv_and_pycache_are_always_excluded_even_with_a_negation(tmp_path: Path) -> None:
    write(tmp_path, ".runyardignore", "!.git/\n!.venv\n!__pycache__/\n!*.pyc\n")
    write(tmp_path, ".git/HEAD")
    write(tmp_path, ".venv/bin/python")
    write(tmp_path, "__pycache__/m.cpython-311.pyc")
    write(tmp_path, "pkg/__pycache__/n.cpython-311.pyc")
    write(tmp_path, "pkg/.venv/lib/x.py")
    write(tmp_path, "pkg/vendored/.git/config")
    write(tmp_path, "pkg/module.py")

    assert list_files(tmp_path) == [".runyardignore", "pkg/module.py"]


def test_ignored_directory_is_not_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, ".gitignore", "data/\n")
    write(tmp_path, "train.py")
    for i in range(20):
        write(tmp_path, f"data/part{i}/file.bin")
    scanned: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str | os.PathLike[str] = ".") -> os.ScandirIterator[str]:
        scanned.append(Path(path).resolve().as_posix())
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)

    assert list_files(tmp_path) == [".gitignore", "train.py"]
    assert scanned == [tmp_path.resolve().as_posix()]


def test_bad_pattern_in_an_ignore_file_is_reported_as_invalid_input(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\ntrailing-backslash\\\n")

    with pytest.raises(InvalidInput, match=r"\.gitignore"):
        list_files(tmp_path)


# --------------------------------------------------------------------------------------------
# Symlinks and special files
# --------------------------------------------------------------------------------------------


def test_symlink_to_a_file_inside_the_folder_is_stored_as_its_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "config/base.yaml", "lr: 0.1\n")
    (src / "config.yaml").symlink_to("config/base.yaml")

    snap = pack(src)

    by_name = {m.name: m for m in members_of(snap.archive)}
    assert sorted(by_name) == ["config.yaml", "config/base.yaml"]
    assert by_name["config.yaml"].isreg()
    with tarfile.open(fileobj=io.BytesIO(snap.archive), mode="r:gz") as tar:
        handle = tar.extractfile("config.yaml")
        assert handle is not None
        assert handle.read() == b"lr: 0.1\n"


def test_symlink_pointing_outside_the_folder_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "train.py")
    write(tmp_path, "secret.txt", "password")
    (src / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (src / "passwd").symlink_to("/etc/passwd")
    (src / "escape").symlink_to("../secret.txt")

    assert list_files(src) == ["train.py"]


def test_symlinks_to_directories_are_not_followed(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py")
    (tmp_path / "pkg_link").symlink_to("pkg", target_is_directory=True)
    (tmp_path / "loop").symlink_to(".", target_is_directory=True)
    (tmp_path / "dangling").symlink_to("missing.txt")

    assert list_files(tmp_path) == ["pkg/mod.py"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs fifos")
def test_fifos_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "train.py")
    os.mkfifo(tmp_path / "pipe")

    assert list_files(tmp_path) == ["train.py"]
    assert pack(tmp_path).file_count == 1


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_packing_a_missing_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        pack(tmp_path / "nope")
    with pytest.raises(InvalidInput, match="does not exist"):
        list_files(tmp_path / "nope")


def test_packing_a_file_is_invalid_input(tmp_path: Path) -> None:
    path = write(tmp_path, "train.py")

    with pytest.raises(InvalidInput, match="not a directory") as caught:
        pack(path)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


def must_not_build(*args: object, **kwargs: object) -> None:
    raise AssertionError("the archive must not be built when over a limit")


def test_too_many_bytes_raises_before_the_archive_is_built_and_names_largest_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse(tmp_path, "data/big.bin", 120 * MB)
    sparse(tmp_path, "data/huge.bin", 150 * MB)
    sparse(tmp_path, "models/m.bin", 40 * MB)
    sparse(tmp_path, "models/n.bin", 9 * MB)
    sparse(tmp_path, "b.bin", 2 * MB)
    sparse(tmp_path, "tiny.bin", 1024)

    monkeypatch.setattr(tarfile, "open", must_not_build)

    with pytest.raises(SnapshotTooLarge) as caught:
        pack(tmp_path)

    message = str(caught.value)
    assert "321.0 MB" in message
    assert "300.0 MB" in message
    for offender in (
        "data/huge.bin (150.0 MB)",
        "data/big.bin (120.0 MB)",
        "models/m.bin (40.0 MB)",
        "models/n.bin (9.0 MB)",
        "b.bin (2.0 MB)",
    ):
        assert offender in message
    assert "tiny.bin" not in message
    assert ".runyardignore" in message


def test_too_many_files_raises_and_names_the_folders_with_most_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        write(tmp_path, f"images/{i}.png")
    for i in range(5):
        write(tmp_path, f"docs/{i}.md")
    write(tmp_path, "train.py")
    monkeypatch.setattr(tarfile, "open", must_not_build)

    with pytest.raises(SnapshotTooLarge) as caught:
        pack(tmp_path, SnapshotLimits(max_files=20))

    message = str(caught.value)
    assert "36 files" in message
    assert "limit of 20 files" in message
    assert "images/ (30 files)" in message
    assert "docs/ (5 files)" in message
    assert ".runyardignore" in message


def test_file_count_message_names_at_most_five_folders(tmp_path: Path) -> None:
    for folder, count in [("a", 9), ("b", 8), ("c", 7), ("d", 6), ("e", 5), ("f", 4), ("g", 3)]:
        for i in range(count):
            write(tmp_path, f"{folder}/{i}.txt")

    with pytest.raises(SnapshotTooLarge) as caught:
        pack(tmp_path, SnapshotLimits(max_files=10))

    message = str(caught.value)
    for expected in ("a/ (9 files)", "b/ (8 files)", "c/ (7 files)", "d/ (6 files)", "e/ (5"):
        assert expected in message
    assert "f/ (" not in message
    assert "g/ (" not in message


def test_file_count_message_points_at_the_subfolder_holding_most_files(tmp_path: Path) -> None:
    for i in range(30):
        write(tmp_path, f"project/images/{i}.png")
    for i in range(3):
        write(tmp_path, f"project/src/{i}.py")

    with pytest.raises(SnapshotTooLarge) as caught:
        pack(tmp_path, SnapshotLimits(max_files=20))

    message = str(caught.value)
    assert "project/images/ (30 files)" in message
    assert "project/ (" not in message


def test_a_folder_exactly_at_the_limits_packs(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", b"12345")
    write(tmp_path, "b.txt", b"12345")

    snap = pack(tmp_path, SnapshotLimits(max_bytes=10, max_files=2))

    assert (snap.file_count, snap.total_bytes) == (2, 10)


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def make_project(root: Path) -> Path:
    write(root, "train.py", "print('train')\n")
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/model.py", "class Model: ...\n")
    write(root, "data/labels.csv", "a,b\n1,2\n")
    write(root, "données/é.txt", "unicode name\n")
    return root


def test_same_contents_give_the_same_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")

    first, second = pack(root), pack(root)

    assert first.archive == second.archive
    assert first.digest == second.digest == digest_of(first.archive)
    assert first.digest.startswith("sha256:") and len(first.digest) == len("sha256:") + 64


def test_touching_files_does_not_change_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    before = pack(root).digest

    for path in root.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    (root / "pkg" / "model.py").chmod(0o600)  # only the owner's exec bit is recorded

    assert pack(root).digest == before


def test_copying_the_folder_elsewhere_does_not_change_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    copy = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new mtimes too

    assert pack(copy).digest == pack(root).digest


def test_changing_content_changes_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    before = pack(root).digest

    write(root, "pkg/model.py", "class Model: pass\n")

    assert pack(root).digest != before


def test_archive_has_fixed_metadata_and_sorted_regular_file_entries(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")

    archive = pack(root).archive

    assert archive[:2] == b"\x1f\x8b"
    assert archive[3] == 0  # no FNAME (or any other) gzip flag
    assert archive[4:8] == b"\x00\x00\x00\x00"  # gzip mtime
    members = members_of(archive)
    names = [m.name for m in members]
    assert names == sorted(names) == list_files(root)
    for m in members:
        assert m.isreg()
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == 0o644


def test_executable_bit_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "run.sh", "#!/bin/sh\necho hi\n").chmod(0o755)
    write(src, "plain.txt").chmod(0o664)

    snap = pack(src)

    modes = {m.name: m.mode for m in members_of(snap.archive)}
    assert modes == {"plain.txt": 0o644, "run.sh": 0o755}
    out = tmp_path / "out"
    extract(snap.archive, out)
    assert stat.S_IMODE((out / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "plain.txt").stat().st_mode) == 0o644


# --------------------------------------------------------------------------------------------
# Round trip and inspection
# --------------------------------------------------------------------------------------------


def test_pack_then_extract_gives_identical_files(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    write(root, "blob.bin", bytes(range(256)) * 1000)
    write(root, ".gitignore", "*.log\n")
    write(root, "ignored.log")
    snap = pack(root)
    out = tmp_path / "out" / "nested"  # created if missing

    extract(snap.archive, out)

    expected = {rel: (root / rel).read_bytes() for rel in list_files(root)}
    assert tree(out) == expected
    assert "ignored.log" not in tree(out)


def test_inspect_archive_reports_file_count_and_total_bytes(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    snap = pack(root)

    assert inspect_archive(snap.archive) == (snap.file_count, snap.total_bytes)
    assert snap.file_count == 5
    assert snap.total_bytes == sum((root / rel).stat().st_size for rel in list_files(root))


def test_archive_from_other_tar_tools_with_dot_prefixes_extracts(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=".")
    out = tmp_path / "out"

    extract(buffer.getvalue(), out)

    assert tree(out) == tree(root)


def test_empty_folder_packs_into_an_archive_with_no_files(tmp_path: Path) -> None:
    snap = pack(tmp_path)

    assert (snap.file_count, snap.total_bytes) == (0, 0)
    assert inspect_archive(snap.archive) == (0, 0)


# --------------------------------------------------------------------------------------------
# Hostile archives
# --------------------------------------------------------------------------------------------

GOOD = member("ok.txt", b"fine")

HostileCase = Callable[[Path], bytes]

HOSTILE: dict[str, HostileCase] = {
    "absolute path": lambda tmp: tgz(GOOD, member(str(tmp / "outside" / "evil.txt"))),
    "parent dir": lambda tmp: tgz(GOOD, member("../evil.txt")),
    "parent dir in the middle": lambda tmp: tgz(GOOD, member("a/../../evil.txt")),
    "backslash trick": lambda tmp: tgz(GOOD, member("..\\..\\evil.txt")),
    "symlink to /etc/passwd": lambda tmp: tgz(
        GOOD, special("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")
    ),
    "harmless-looking symlink": lambda tmp: tgz(
        GOOD, special("link", tarfile.SYMTYPE, linkname="ok.txt")
    ),
    "hardlink": lambda tmp: tgz(GOOD, special("hard", tarfile.LNKTYPE, linkname="ok.txt")),
    "char device": lambda tmp: tgz(GOOD, special("null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
    "block device": lambda tmp: tgz(GOOD, special("sda", tarfile.BLKTYPE, devmajor=8)),
    "fifo": lambda tmp: tgz(GOOD, special("pipe", tarfile.FIFOTYPE)),
    "duplicate names": lambda tmp: tgz(GOOD, member("ok.txt", b"other")),
    "duplicate after ./ prefix": lambda tmp: tgz(GOOD, member("./ok.txt", b"other")),
    "empty name": lambda tmp: tgz(GOOD, member("")),
    "NUL in name": lambda tmp: tgz(GOOD, member("x", pax_headers={"path": "a\x00b"})),
    "file inside a file": lambda tmp: tgz(GOOD, member("ok.txt/inner")),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_is_extracted(case: str, tmp_path: Path) -> None:
    archive = HOSTILE[case](tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(UnsafeArchive):
        inspect_archive(archive)
    with pytest.raises(UnsafeArchive):
        extract(archive, dest)

    assert list(dest.iterdir()) == []
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_archive_message_names_the_offending_member(tmp_path: Path) -> None:
    archive = tgz(GOOD, member("a/../../evil.txt"))

    with pytest.raises(UnsafeArchive, match=r"a/\.\./\.\./evil\.txt"):
        inspect_archive(archive)


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(b"", id="empty bytes"),
        pytest.param(b"PK\x03\x04 not a tar at all", id="zip bytes"),
        pytest.param(gzip.compress(b"just some text, not a tar" * 40), id="gzip of text"),
        pytest.param(b"\x1f\x8b\x08\x00garbage", id="broken gzip"),
    ],
)
def test_non_gzip_tar_bytes_are_refused(archive: bytes, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="not a gzip-compressed tar archive"):
        inspect_archive(archive)
    with pytest.raises(UnsafeArchive, match="not a gzip-compressed tar archive"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_uncompressed_tar_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info, data = GOOD
        tar.addfile(info, io.BytesIO(data))

    with pytest.raises(UnsafeArchive, match="not a gzip-compressed tar archive"):
        inspect_archive(buffer.getvalue())


def test_truncated_archive_is_refused_and_nothing_is_extracted(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root, "a.bin", os.urandom(200_000))
    write(root, "b.bin", os.urandom(200_000))
    archive = pack(root).archive
    dest = tmp_path / "dest"

    with pytest.raises(UnsafeArchive):
        extract(archive[: len(archive) // 2], dest)

    assert not dest.exists()


def test_member_over_the_size_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    archive = tgz(GOOD, member("big.bin", b"\0" * 5000))
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(SnapshotTooLarge):
        inspect_archive(archive, SnapshotLimits(max_bytes=1000))
    with pytest.raises(SnapshotTooLarge):
        extract(archive, dest, SnapshotLimits(max_bytes=1000))

    assert list(dest.iterdir()) == []


def test_header_claiming_a_huge_member_is_refused_without_reading_its_data() -> None:
    info = tarfile.TarInfo("bomb.bin")
    info.size = 50 * 1024 * MB  # 50 GB; the data is not even there
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    archive = gzip.compress(header, mtime=0)

    with pytest.raises(SnapshotTooLarge, match=r"bomb\.bin"):
        inspect_archive(archive)


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    archive = tgz(*(member(f"f{i}.txt") for i in range(4)))
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(SnapshotTooLarge):
        inspect_archive(archive, SnapshotLimits(max_files=3))
    with pytest.raises(SnapshotTooLarge):
        extract(archive, dest, SnapshotLimits(max_files=3))

    assert list(dest.iterdir()) == []


def test_oversized_pax_header_is_refused_before_it_is_read() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    payload = b"0" * (2 * MB)
    info.size = len(payload)
    raw = info.tobuf(format=tarfile.USTAR_FORMAT) + payload + b"\0" * 1024
    archive = gzip.compress(raw, mtime=0)

    with pytest.raises((UnsafeArchive, SnapshotTooLarge)):
        inspect_archive(archive, SnapshotLimits(max_bytes=100 * MB))


def test_extract_refuses_to_write_through_an_existing_symlinked_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    archive = tgz(member("sub/evil.txt"))

    with pytest.raises(UnsafeArchive, match="symlink"):
        extract(archive, dest)

    assert list(outside.iterdir()) == []


def test_extract_refuses_to_write_through_an_existing_symlinked_file(tmp_path: Path) -> None:
    target = write(tmp_path, "outside.txt", "original")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ok.txt").symlink_to(target)

    with pytest.raises(UnsafeArchive, match="symlink"):
        extract(tgz(GOOD), dest)

    assert target.read_text() == "original"


def test_extract_replaces_an_existing_regular_file(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    write(dest, "ok.txt", "old")

    extract(tgz(GOOD), dest)

    assert (dest / "ok.txt").read_bytes() == b"fine"


def test_extract_ignores_modes_other_than_the_owner_exec_bit(tmp_path: Path) -> None:
    archive = tgz(member("setuid", mode=0o4777), member("private", mode=0o600))

    extract(archive, tmp_path / "out")

    assert stat.S_IMODE((tmp_path / "out" / "setuid").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "private").stat().st_mode) == 0o644
