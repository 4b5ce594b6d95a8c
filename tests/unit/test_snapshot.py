"""Snapshots: ignore rules, limits, deterministic packing, and refusing hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
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


def test_a_fixed_folder_packs_to_the_same_bytes_as_ever(tmp_path: Path) -> None:
    """Digests are content addresses already stored by servers and workers: a change in how
    the archive is built would stop identical code from sharing its snapshot. The tar inside
    is pinned on its own too, so a failure says whether Runyard's bytes changed or only the
    compressor's (zlib's deflate at level 6)."""
    root = make_project(tmp_path / "p")
    write(root, "run.sh", "#!/bin/sh\necho run\n").chmod(0o755)

    snap = pack(root)

    tar_sha256 = hashlib.sha256(gzip.decompress(snap.archive)).hexdigest()
    assert tar_sha256 == "0bbd29cb13344ce32dd8a92af000958c95ea081647a5f5876ad2723d0a040871"
    assert snap.digest == (
        "sha256:44a70e6dcdb00551eca93daf6d79513824bafc980b23bace24deef8e8d77fdd9"
    )
    assert (snap.file_count, snap.total_bytes) == (6, 72)


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


# --------------------------------------------------------------------------------------------
# Secrets: never in a snapshot
# --------------------------------------------------------------------------------------------

TOKEN = "ryt_" + "T0kEn-for-tests_" * 3  # the shape `runyard up` and `token create` give
SECRET_KEY = "5e" * 32  # what the API writes to <data>/secret_key: 64 hex characters


def names_in(snap: Snapshot) -> list[str]:
    return sorted(info.name for info in members_of(snap.archive))


def data_folder(root: Path, rel: str, *, marker: str = "all") -> Path:
    """A folder as `runyard up` leaves it: config, key, database, stored snapshots, worker."""
    folder = root / rel
    write(folder, "config.json", f'{{"url": "http://127.0.0.1:8642", "token": "{TOKEN}"}}')
    if marker in ("all", "secret_key"):
        write(folder, "secret_key", SECRET_KEY + "\n")
    if marker in ("all", "runyard.db"):
        write(folder, "runyard.db", b"SQLite format 3\0" + b"\0" * 100)
    if marker in ("all", "snapshots"):
        write(folder, "snapshots/sha256/" + "ab" * 32 + ".tar.gz", b"\x1f\x8b...")
    write(folder, "redis/appendonlydir/appendonly.aof.1.incr.aof", "*2\r\n")
    write(folder, "runs/run-1/outputs/model.pkl", "weights")
    return folder


def test_a_runyard_config_holding_a_token_is_left_out_wherever_it_is(tmp_path: Path) -> None:
    write(tmp_path, "train.py")
    write(tmp_path, "config.json", json.dumps({"url": "http://x:8642", "token": TOKEN}))
    write(tmp_path, "notebooks/config.json", json.dumps({"api_url": "http://y", "token": "t"}))

    snap = pack(tmp_path)

    assert names_in(snap) == ["train.py"]
    assert snap.left_out == ("config.json", "notebooks/config.json")
    assert list_files(tmp_path) == ["train.py"]


def test_a_config_without_a_token_and_azures_config_are_kept(tmp_path: Path) -> None:
    write(tmp_path, "config.json", json.dumps({"url": "http://127.0.0.1:8642"}))
    azure = {"subscription_id": "s", "resource_group": "r", "workspace_name": "w"}
    write(tmp_path, "azure/config.json", json.dumps(azure))
    write(tmp_path, "model/config.json", json.dumps({"hidden_size": 768, "token": "[CLS]"}))

    snap = pack(tmp_path)

    assert names_in(snap) == ["azure/config.json", "config.json", "model/config.json"]
    assert snap.left_out == ()


def test_a_credentials_file_in_the_folder_is_left_out(tmp_path: Path) -> None:
    """A notebook server whose home is the project folder: ~/.config is inside it."""
    credentials = {"services": {"http://127.0.0.1:8642": {"token": TOKEN}}}
    write(tmp_path, ".config/runyard/credentials.json", json.dumps(credentials))
    write(tmp_path, "train.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["train.py"]
    assert snap.left_out == (".config/runyard/credentials.json",)


def test_the_runyard_folder_is_left_out_by_its_name(tmp_path: Path) -> None:
    write(tmp_path, ".runyard/config.json", json.dumps({"url": "http://127.0.0.1:8642"}))
    write(tmp_path, ".runyard/redis/appendonlydir/appendonly.aof.1.base.rdb", "REDIS")
    write(tmp_path, "train.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["train.py"]
    assert snap.left_out == (".runyard/",)


@pytest.mark.parametrize("marker", ["secret_key", "runyard.db", "snapshots", "all"])
@pytest.mark.parametrize("where", [".runyard", "state", "deep/down/runyard-data"])
def test_the_data_folder_of_runyard_up_is_left_out_wherever_it_sits(
    tmp_path: Path, marker: str, where: str
) -> None:
    data_folder(tmp_path, where, marker=marker)
    write(tmp_path, "train.py")
    write(tmp_path, "deep/keep.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["deep/keep.py", "train.py"]
    assert snap.left_out == (where + "/",)
    assert list_files(tmp_path) == ["deep/keep.py", "train.py"]


def test_a_workers_folder_is_left_out(tmp_path: Path) -> None:
    """`runyard worker --work-dir` inside a project: its SDK copy and snapshot cache."""
    write(tmp_path, "work/local-gpu-1/sdk/runyard/__init__.py")
    write(tmp_path, "work/local-gpu-1/snapshots/" + "ab" * 32 + "/train.py")
    write(tmp_path, "work/local-gpu-1/runs/r1/workdir/train.py")
    write(tmp_path, "train.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["train.py"]
    assert snap.left_out == ("work/local-gpu-1/",)


def test_folders_that_only_look_alike_are_kept(tmp_path: Path) -> None:
    """A file named secret_key that is not the API's key, model snapshots, a runs folder."""
    write(tmp_path, "app/secret_key", "not-a-runyard-key")
    write(tmp_path, "app/main.py")
    write(tmp_path, "snapshots/epoch-3.pt")
    write(tmp_path, "runs/events.out")
    write(tmp_path, "worker/task.py")

    snap = pack(tmp_path)

    assert snap.left_out == ()
    assert "app/secret_key" in names_in(snap)


def test_a_data_folder_given_as_the_source_is_refused(tmp_path: Path) -> None:
    folder = data_folder(tmp_path, ".runyard")

    with pytest.raises(InvalidInput, match="Runyard data folder"):
        pack(folder)


def test_a_gitignored_data_folder_is_left_out_without_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_folder(tmp_path, ".runyard")
    write(tmp_path, ".gitignore", ".runyard/\n")
    write(tmp_path, "train.py")

    snap = pack(tmp_path)

    assert names_in(snap) == [".gitignore", "train.py"]
    assert snap.left_out == ()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("offset", [0, 10, 64 * 1024 - 20, 200 * 1024 + 7])
def test_a_file_holding_the_callers_token_is_left_out(tmp_path: Path, offset: int) -> None:
    """Found wherever it sits in the file, across the edges of the chunks it is read in."""
    project, alone = tmp_path / "with", tmp_path / "without"
    write(project, "train.py")
    write(project, "notes/setup.md", b"x" * offset + TOKEN.encode() + b"\nmore\n")
    write(project, "data.bin", os.urandom(300 * 1024))
    write(alone, "train.py")
    shutil.copy(project / "data.bin", alone / "data.bin")

    snap = pack(project, tokens=[TOKEN])

    assert names_in(snap) == ["data.bin", "train.py"]
    assert snap.left_out == ("notes/setup.md",)
    assert snap.file_count == 2 and snap.total_bytes == 1 + 300 * 1024
    # The archive is the one of the folder without that file: byte for byte.
    assert snap.digest == pack(alone).digest
    assert TOKEN.encode() not in gzip.decompress(snap.archive)


def test_every_file_holding_the_token_is_left_out(tmp_path: Path) -> None:
    """After the first one the archive is built again: later ones are found on the way."""
    for name in ("a.txt", "b.txt", "m.txt", "z.txt"):
        write(tmp_path, name, "fine")
    for name in ("b.txt", "z.txt"):
        write(tmp_path, name, f"token={TOKEN}")

    snap = pack(tmp_path, tokens=[TOKEN, "short"])

    assert names_in(snap) == ["a.txt", "m.txt"]
    assert snap.left_out == ("b.txt", "z.txt")


def test_short_tokens_are_not_looked_for(tmp_path: Path) -> None:
    """A token of a few characters would match ordinary text; issued ones are 47."""
    write(tmp_path, "train.py", "admin = True\n")

    assert names_in(pack(tmp_path, tokens=["admin", ""])) == ["train.py"]


def test_a_copy_of_a_secret_found_in_the_folder_is_left_out(tmp_path: Path) -> None:
    """The data folder's key and a config's token, pasted elsewhere, with no token given."""
    data_folder(tmp_path, "state")
    write(tmp_path, "backup/key.txt", SECRET_KEY)
    write(tmp_path, "README.md", f"curl -H 'Authorization: Bearer {TOKEN}' ...")
    write(tmp_path, "train.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["train.py"]
    assert snap.left_out == ("README.md", "backup/key.txt", "state/")


def test_links_to_secrets_are_left_out(tmp_path: Path) -> None:
    """An in-folder link ships its target's content: not when the target is a secret."""
    data_folder(tmp_path, "state")
    write(tmp_path, "cfg/runyard.json", json.dumps({"url": "http://x", "token": TOKEN}))
    os.rename(tmp_path / "cfg" / "runyard.json", tmp_path / "cfg" / "config.json")
    (tmp_path / "key").symlink_to(tmp_path / "state" / "secret_key")
    (tmp_path / "db").symlink_to("state/runyard.db")
    (tmp_path / "settings.json").symlink_to("cfg/config.json")
    write(tmp_path, "real.py")
    (tmp_path / "alias.py").symlink_to("real.py")

    snap = pack(tmp_path)

    assert names_in(snap) == ["alias.py", "real.py"]
    assert snap.left_out == ("cfg/config.json", "db", "key", "settings.json", "state/")


def test_the_note_names_what_was_left_out_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_folder(tmp_path, ".runyard")
    write(tmp_path, "config.json", json.dumps({"url": "http://x", "token": TOKEN}))
    write(tmp_path, "notes.txt", TOKEN)
    write(tmp_path, "train.py")

    pack(tmp_path, tokens=[TOKEN])

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "runyard: not in the snapshot, to keep secrets out of runs: "
        ".runyard/ (a Runyard data folder), config.json (a Runyard config holding a token), "
        "notes.txt (holds your token)\n"
    )


def test_a_long_note_stays_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(8):
        write(tmp_path, f"n{i}.txt", TOKEN)
    write(tmp_path, "train.py")

    snap = pack(tmp_path, tokens=[TOKEN])

    err = capsys.readouterr().err
    assert len(snap.left_out) == 8
    assert err.count("\n") == 1
    assert "n4.txt (holds your token), and 3 more" in err and "n5.txt" not in err


def test_nothing_left_out_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "train.py")

    pack(tmp_path, tokens=[TOKEN])

    assert capsys.readouterr().err == ""


class FakeClient:
    """Stands in for the service: keeps what a submit uploads."""

    token = TOKEN
    base_url = "http://127.0.0.1:8642"

    def __init__(self) -> None:
        self.uploaded: bytes | None = None

    def has_snapshot(self, digest: str) -> bool:
        return False

    def submit(self, spec: dict, archive: bytes | None) -> dict:
        self.uploaded = archive
        return {"id": "run-1", "status": "Queued", **spec}


def fake_workspace() -> tuple:
    from runyard.core import Workspace

    workspace = Workspace(url=FakeClient.base_url, token=TOKEN)
    client = FakeClient()
    workspace._client = client  # type: ignore[assignment]
    return workspace, client


def test_submit_refuses_a_script_that_would_be_left_out(tmp_path: Path) -> None:
    """A script holding the token cannot run without it: say so, upload nothing."""
    from runyard.core import Experiment, ScriptRunConfig

    write(tmp_path, "train.py", f"TOKEN = {TOKEN!r}\n")
    workspace, client = fake_workspace()

    with pytest.raises(InvalidInput, match=r"'\./train\.py' is left out of the snapshot"):
        Experiment(workspace, "e").submit(ScriptRunConfig(str(tmp_path), "./train.py"))
    assert client.uploaded is None


def test_submit_leaves_out_the_callers_token_and_the_credentials_files_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What Experiment.submit uploads, with the token it talks to the service with."""
    from runyard import config
    from runyard.core import Experiment, ScriptRunConfig

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    other = "ryt_" + "another-service-token" * 2
    config.save_token("http://elsewhere:8642", other)
    project = tmp_path / "project"
    write(project, "train.py", "print('hi')\n")
    write(project, "pasted.txt", f"RUNYARD_TOKEN={TOKEN}\n")
    write(project, "old.txt", f"token for the other one: {other}\n")

    workspace, client = fake_workspace()
    Experiment(workspace, "e").submit(ScriptRunConfig(source_directory=project, script="train.py"))

    assert client.uploaded is not None
    with tarfile.open(fileobj=io.BytesIO(client.uploaded), mode="r:gz") as tar:
        assert tar.getnames() == ["train.py"]
    assert "old.txt (holds your token), pasted.txt (holds your token)" in capsys.readouterr().err
