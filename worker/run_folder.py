"""A run's folders as the worker reads them: through descriptors, never by a path the run
controls.

The worker makes a run's working folder and channel before the run starts, while they are
its own, and opens them then (``O_DIRECTORY|O_NOFOLLOW``): the channel file and the staging
folder for files the SDK uploads are made and opened too. Everything it reads afterwards
(channel lines, staged files, ``./outputs``, ``./checkpoints``) goes through those
descriptors, one name at a time, each opened ``O_NOFOLLOW|O_NONBLOCK`` and checked by
``fstat`` to be a regular file or a folder. A run that swaps a folder for a link, or a file
for a FIFO or a device, loses its own data and nothing else: the worker never follows,
never blocks, never reads outside.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runyard.errors import UnsafeEntry
from runyard.tracking.contract import CHANNEL_FILE, CHECKPOINTS_DIR, OUTPUTS_DIR, STAGING_DIR

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
REGULAR = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
ENTRY_BYTES = 4096  # what one entry of a folder costs at least (an inode, a block)
# The folders of the working folder whose files are stored in the run record when an
# attempt ends (``RunFolder.outputs``), and put back before a requeued run's next one.
KEPT_FOLDERS = (OUTPUTS_DIR, CHECKPOINTS_DIR)


def open_folder(name: str | Path, dir_fd: int | None = None) -> int:
    """A folder, refusing a link in its last component."""
    try:
        return os.open(name, DIRECTORY, dir_fd=dir_fd)
    except OSError as exc:
        raise UnsafeEntry(f"{name}: not a folder the worker may open ({exc.strerror})") from None


def open_regular(dir_fd: int, name: str) -> BinaryIO:
    """A regular file named by one component inside the folder ``dir_fd``."""
    return os.fdopen(_regular_fd(dir_fd, name), "rb")


def _regular_fd(dir_fd: int, name: str) -> int:
    if not name or "/" in name or name in (".", ".."):
        raise UnsafeEntry(f"{name!r} is not a plain file name")
    try:
        fd = os.open(name, REGULAR, dir_fd=dir_fd)
    except OSError as exc:
        raise UnsafeEntry(f"{name}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeEntry(f"{name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


@dataclass
class RunFolder:
    """Descriptors on one run's working folder, channel folder, channel file and staging
    folder (None where a recovered folder lacks one)."""

    workdir: int | None
    tracking: int | None
    channel: int | None
    staging: int | None

    @classmethod
    def create(cls, workdir: Path, tracking: Path) -> RunFolder:
        """Before the run starts: make the channel file and staging folder, open all four."""
        tracking_fd = open_folder(tracking)
        os.mkdir(STAGING_DIR, dir_fd=tracking_fd)
        made = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        channel = os.open(CHANNEL_FILE, made, 0o644, dir_fd=tracking_fd)
        return cls(
            workdir=open_folder(workdir),
            tracking=tracking_fd,
            channel=channel,
            staging=open_folder(STAGING_DIR, tracking_fd),
        )

    @classmethod
    def reopen(cls, run_dir: Path) -> RunFolder:
        """What a restarted worker finds of a run its killed life held: whatever of it is
        still a plain folder or file (the run may have had the folders to itself)."""
        base = open_folder(run_dir)
        try:
            tracking = _maybe(lambda: open_folder("tracking", base))
            channel = staging = None
            if tracking is not None:
                channel = _maybe(lambda: _regular_fd(tracking, CHANNEL_FILE))
                staging = _maybe(lambda: open_folder(STAGING_DIR, tracking))
            return cls(
                workdir=_maybe(lambda: open_folder("workdir", base)),
                tracking=tracking,
                channel=channel,
                staging=staging,
            )
        finally:
            os.close(base)

    def read_channel(self, offset: int, size: int) -> bytes:
        if self.channel is None:
            return b""
        return os.pread(self.channel, size, offset)

    def staged(self, name: str) -> BinaryIO:
        """A file the SDK staged for upload (``ChannelSink.store_file``)."""
        if self.staging is None:
            raise UnsafeEntry("the run has no staging folder")
        return open_regular(self.staging, name)

    def remove_staged(self, name: str) -> None:
        if self.staging is not None:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.staging)

    def outputs(self) -> Iterator[tuple[str, BinaryIO]]:
        """Each regular file under ``./outputs``, then under ``./checkpoints`` (stored
        alike, and put back for a requeued run's next attempt), as (name in the run record,
        open file), in name order. Links, FIFOs and devices are passed over; so is either
        folder itself when it is not a plain folder."""
        for top in KEPT_FOLDERS:
            yield from self._files_under(top)

    def _files_under(self, top_name: str) -> Iterator[tuple[str, BinaryIO]]:
        if self.workdir is None:
            return
        try:
            top = open_folder(top_name, self.workdir)
        except UnsafeEntry:
            return
        try:
            for folder, dirnames, filenames, folder_fd in os.fwalk(
                ".", dir_fd=top, follow_symlinks=False
            ):
                dirnames.sort()  # os.fwalk does not descend into links (it compares stats)
                prefix = top_name if folder == "." else f"{top_name}/{folder[2:]}"
                for filename in sorted(filenames):
                    try:
                        content = open_regular(folder_fd, filename)
                    except UnsafeEntry:
                        continue
                    with content:
                        yield f"{prefix}/{filename}", content
        finally:
            os.close(top)

    def usage(self, stop_past: int) -> int:
        """Bytes the run keeps in its working folder, counted until past ``stop_past``:
        each entry (links not followed) at least one block, so a million empty files
        weigh too."""
        if self.workdir is None:
            return 0
        total = 0
        for _, dirnames, filenames, folder_fd in os.fwalk(".", dir_fd=self.workdir):
            total += ENTRY_BYTES * len(dirnames)
            for name in filenames:
                with contextlib.suppress(OSError):
                    info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                    total += max(info.st_blocks * 512, ENTRY_BYTES)
            if total > stop_past:
                break
        return total

    def close(self) -> None:
        for fd in (self.workdir, self.tracking, self.channel, self.staging):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.workdir = self.tracking = self.channel = self.staging = None


def _maybe(opener: Callable[[], int]) -> int | None:
    try:
        return opener()
    except UnsafeEntry:
        return None
