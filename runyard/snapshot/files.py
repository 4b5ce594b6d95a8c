"""How snapshot code opens files on both sides: in binary, never inherited by a child
process, and never through a symlink unless the caller means to follow one. Also the only
two modes a file in a snapshot has (part of the archive format: changing them changes
every digest), and the path type callers may pass."""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]  # a path as a caller may give one
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FILE_MODE = 0o644
EXEC_MODE = 0o755
COPY_CHUNK = 64 * 1024
