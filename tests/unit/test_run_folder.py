"""What the worker reads of a run's folders, attacked as a run would attack it: links,
FIFOs, devices and swapped folders reach nothing outside the run and block nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runyard.tracking.sinks import CHANNEL_FILE, STAGING_DIR
from worker.run_folder import RunFolder, UnsafeEntry


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A run's folders as the worker makes them before the run starts, and a host file."""
    (tmp_path / "run" / "workdir").mkdir(parents=True)
    (tmp_path / "run" / "tracking").mkdir()
    secret = tmp_path / "host" / "secret_key"
    secret.parent.mkdir()
    secret.write_text("the service's signing key")
    folder = RunFolder.create(tmp_path / "run" / "workdir", tmp_path / "run" / "tracking")
    try:
        yield folder, tmp_path / "run", secret
    finally:
        folder.close()


def test_a_staging_folder_swapped_for_a_link_reaches_nothing_outside(run) -> None:  # type: ignore[no-untyped-def]
    """Seen: the worker followed files -> /host and uploaded, then deleted, a host file."""
    folder, run_dir, secret = run
    staging = run_dir / "tracking" / STAGING_DIR
    os.rmdir(staging)
    os.symlink(secret.parent, staging)
    with pytest.raises(UnsafeEntry):
        folder.staged("secret_key")
    folder.remove_staged("secret_key")
    assert secret.read_text() == "the service's signing key"  # neither read nor removed


def test_a_staged_link_fifo_or_device_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    folder, run_dir, secret = run
    staging = run_dir / "tracking" / STAGING_DIR
    os.symlink(secret, staging / "link")
    os.mkfifo(staging / "fifo")
    for name in ("link", "fifo", "missing", "../workdir", "a/b", ".."):
        with pytest.raises(UnsafeEntry):
            folder.staged(name)
    (staging / "fine").write_bytes(b"weights")
    with folder.staged("fine") as content:
        assert content.read() == b"weights"


def test_a_channel_file_swapped_for_a_fifo_never_blocks_the_worker(run) -> None:  # type: ignore[no-untyped-def]
    """Seen: events.jsonl replaced by a FIFO hung the forwarder's open() for good."""
    folder, run_dir, _ = run
    channel = run_dir / "tracking" / CHANNEL_FILE
    channel.write_bytes(b'{"line": 1}\n')
    os.unlink(channel)
    os.mkfifo(channel)
    assert folder.read_channel(0, 1024) == b'{"line": 1}\n'  # the worker's own file
    recovered = RunFolder.reopen(run_dir)  # a restarted worker: refuses it, never opens it
    try:
        assert recovered.channel is None and recovered.read_channel(0, 1024) == b""
    finally:
        recovered.close()


def test_outputs_are_regular_files_only_and_never_through_links(run) -> None:  # type: ignore[no-untyped-def]
    folder, run_dir, secret = run
    outputs = run_dir / "workdir" / "outputs"
    (outputs / "deep").mkdir(parents=True)
    (outputs / "model.bin").write_bytes(b"model")
    (outputs / "deep" / "log.txt").write_text("log")
    os.symlink(secret, outputs / "leak")
    os.symlink(secret.parent, outputs / "hostdir")
    os.mkfifo(outputs / "fifo")
    found = {name: content.read() for name, content in folder.outputs()}
    assert found == {"outputs/deep/log.txt": b"log", "outputs/model.bin": b"model"}


def test_an_outputs_folder_that_is_a_link_yields_nothing(run) -> None:  # type: ignore[no-untyped-def]
    folder, run_dir, secret = run
    os.symlink(secret.parent, run_dir / "workdir" / "outputs")
    assert list(folder.outputs()) == []


def test_a_restarted_worker_reads_only_plain_folders_of_a_leftover_run(run) -> None:  # type: ignore[no-untyped-def]
    folder, run_dir, secret = run
    (run_dir / "tracking" / CHANNEL_FILE).write_bytes(b"kept\n")
    folder.close()
    recovered = RunFolder.reopen(run_dir)
    try:
        assert recovered.read_channel(0, 100) == b"kept\n"
    finally:
        recovered.close()
    os.rename(run_dir / "tracking", run_dir / "tracking.old")
    os.symlink(secret.parent, run_dir / "tracking")
    recovered = RunFolder.reopen(run_dir)
    try:
        assert recovered.tracking is None and recovered.read_channel(0, 100) == b""
    finally:
        recovered.close()


def test_checkpoints_are_kept_like_outputs_and_never_through_links(run) -> None:  # type: ignore[no-untyped-def]
    """A preempted run's ./checkpoints is stored for its next attempt: a link or a FIFO
    put there by the run reads nothing of the host and blocks nothing."""
    folder, run_dir, secret = run
    checkpoints = run_dir / "workdir" / "checkpoints"
    (checkpoints / "deep").mkdir(parents=True)
    (checkpoints / "step.txt").write_text("41")
    (checkpoints / "deep" / "opt.bin").write_bytes(b"adam")
    os.symlink(secret, checkpoints / "leak")
    os.symlink(secret.parent, checkpoints / "hostdir")
    os.mkfifo(checkpoints / "fifo")
    (run_dir / "workdir" / "outputs").mkdir()
    (run_dir / "workdir" / "outputs" / "model.bin").write_bytes(b"model")
    found = {name: content.read() for name, content in folder.outputs()}
    assert found == {
        "outputs/model.bin": b"model",
        "checkpoints/deep/opt.bin": b"adam",
        "checkpoints/step.txt": b"41",
    }


def test_a_checkpoints_folder_that_is_a_link_yields_nothing(run) -> None:  # type: ignore[no-untyped-def]
    folder, run_dir, secret = run
    os.symlink(secret.parent, run_dir / "workdir" / "checkpoints")
    assert list(folder.outputs()) == []
