"""A requeued run's stored files put back in its next attempt's working folder, attacked
as a run (or an API that lies) would attack it: names that climb out, absolute names,
links the snapshot planted where a folder or a file goes, and more bytes than the run may
keep. Nothing is written outside the working folder, nothing through a link."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from runyard.client import Client
from runyard.errors import NotFound
from worker.restore import restore
from worker.run_folder import open_folder


class StoredFiles(Client):
    """The API's answers for one run's files, from a dict (names as the API lists them)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__("http://runyard.test", token="ryt_run")
        self.files = files

    def list_files(self, run_id: str) -> list[dict[str, Any]]:
        return [{"name": name, "size": len(data)} for name, data in self.files.items()]

    @contextlib.contextmanager
    def _read(self, name: str) -> Iterator[IO[bytes]]:
        if name not in self.files:
            raise NotFound(f"no file {name!r}")
        yield io.BytesIO(self.files[name])

    def read_file(self, run_id: str, name: str) -> Any:
        return self._read(name)


@pytest.fixture
def place(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """A working folder (its descriptor, as the worker holds it) and a host folder beside."""
    workdir = tmp_path / "run" / "workdir"
    workdir.mkdir(parents=True)
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret_key").write_text("the service's signing key")
    fd = open_folder(workdir)
    try:
        yield workdir, fd, host
    finally:
        os.close(fd)


def everything_under(folder: Path) -> dict[str, bytes | str]:
    """Files and links (not folders) below ``folder``, by relative name."""
    found: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = f"-> {os.readlink(path)}"
            elif path.is_file():
                found[key] = path.read_bytes()
    return found


def test_checkpoints_and_outputs_come_back_in_place(place) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, _ = place
    api = StoredFiles(
        {
            "checkpoints/step.txt": b"41",
            "checkpoints/deep/opt.bin": b"adam",
            "outputs/model.pt": b"weights",
            "user_logs/std_log.txt": b"the log is not put back",
            "azureml-logs/build.txt": b"neither is another file of the run",
        }
    )
    done = restore(api, "r1", fd, limit=1 << 20)
    assert (done.files, done.refused) == (3, [])
    assert everything_under(workdir) == {
        "checkpoints/step.txt": b"41",
        "checkpoints/deep/opt.bin": b"adam",
        "outputs/model.pt": b"weights",
    }


@pytest.mark.parametrize(
    "name",
    [
        "outputs/../../host/secret_key",
        "checkpoints/../../../escaped",
        "/etc/escaped",
        "outputs//double",
        "outputs/./dot",
        "outputs\\..\\escaped",
        "outputs/nul\x00byte",
        "outputs/",
        "checkpoints/" + "x" * 256,
    ],
)
def test_a_name_that_is_not_a_plain_path_inside_is_refused(place, name: str) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, host = place
    done = restore(StoredFiles({name: b"pwned"}), "r1", fd, limit=1 << 20)
    assert done.files == 0  # said so in the run's log, or not one of the kept folders'
    assert everything_under(workdir) == {}
    assert everything_under(host.parent) == {"host/secret_key": b"the service's signing key"}
    assert not Path("/etc/escaped").exists()


def test_a_link_planted_where_a_folder_goes_is_never_followed(place) -> None:  # type: ignore[no-untyped-def]
    """The snapshot (the submitter's) made ./checkpoints a link to a host folder."""
    workdir, fd, host = place
    os.symlink(host, workdir / "checkpoints")
    done = restore(StoredFiles({"checkpoints/secret_key": b"pwned"}), "r1", fd, limit=1 << 20)
    assert done.files == 0 and "not restored" in done.refused[0]
    assert (host / "secret_key").read_text() == "the service's signing key"
    assert sorted(p.name for p in host.iterdir()) == ["secret_key"]


def test_a_link_planted_where_a_file_goes_is_replaced_not_written_through(place) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, host = place
    (workdir / "outputs").mkdir()
    os.symlink(host / "secret_key", workdir / "outputs" / "model.pt")
    done = restore(StoredFiles({"outputs/model.pt": b"weights"}), "r1", fd, limit=1 << 20)
    assert done.files == 1
    assert (host / "secret_key").read_text() == "the service's signing key"
    assert not (workdir / "outputs" / "model.pt").is_symlink()
    assert (workdir / "outputs" / "model.pt").read_bytes() == b"weights"


def test_a_fifo_or_folder_in_the_way_is_left_and_said(place) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, _ = place
    (workdir / "outputs" / "model.pt").mkdir(parents=True)
    os.mkfifo(workdir / "outputs" / "pipe")
    api = StoredFiles({"outputs/model.pt": b"weights", "outputs/pipe/inner": b"x"})
    done = restore(api, "r1", fd, limit=1 << 20)
    assert done.files == 0 and len(done.refused) == 2
    assert (workdir / "outputs" / "model.pt").is_dir()


def test_past_the_cap_the_rest_is_not_restored(place) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, _ = place
    api = StoredFiles({"checkpoints/a": b"1" * 600, "checkpoints/b": b"2" * 600})
    done = restore(api, "r1", fd, limit=1000)
    assert done.files == 1 and "over 1000 bytes" in done.refused[0]
    assert everything_under(workdir) == {"checkpoints/a": b"1" * 600}


def test_an_api_that_understates_a_size_is_still_capped(place) -> None:  # type: ignore[no-untyped-def]
    workdir, fd, _ = place

    class Understating(StoredFiles):
        def list_files(self, run_id: str) -> list[dict[str, Any]]:
            return [{"name": name, "size": 1} for name in self.files]

    done = restore(Understating({"checkpoints/big": b"x" * 5000}), "r1", fd, limit=1000)
    assert done.files == 0 and done.refused
    assert everything_under(workdir) == {}
    assert not any(name.startswith(".restoring") for name in os.listdir(workdir / "checkpoints"))
