"""A hermetic package index for environment-build tests: tiny pure-Python wheels (and
sdists) written straight into a folder, which a worker is pointed at as a host would be
(``PIP_NO_INDEX=1`` + ``PIP_FIND_LINKS=<folder>``); and an index that never answers. No
network, no build tools."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import socket
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

WHEEL = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    files: dict[str, str] | None = None,
    requires: list[str] | None = None,
) -> Path:
    """``<folder>/<name>-<version>-py3-none-any.whl`` holding ``files`` (default: a module
    ``<name>`` whose ``VERSION`` is ``version``)."""
    folder.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    files = files if files is not None else {f"{module}/__init__.py": f"VERSION = {version!r}\n"}
    info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    content = {
        **files,
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": WHEEL,
    }
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in content.items():
            archive.writestr(path, text)
            records.append(_record_line(path, text.encode()))
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


SLOW_BACKEND = """
import time
def _wait(*args, **kwargs):
    time.sleep({seconds})
    raise RuntimeError("this build backend only waits")
get_requires_for_build_wheel = build_wheel = prepare_metadata_for_build_wheel = _wait
"""


def make_slow_sdist(folder: Path, name: str, version: str, seconds: float) -> Path:
    """An sdist whose in-tree build backend sleeps ``seconds`` before failing: an installer
    that must build it takes that long."""
    folder.mkdir(parents=True, exist_ok=True)
    root = f"{name}-{version}"
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "slow_backend"\n'
            'backend-path = ["."]\n[project]\n'
            f'name = "{name}"\nversion = "{version}"\n'
        ),
        "slow_backend.py": SLOW_BACKEND.format(seconds=seconds),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    sdist = folder / f"{root}.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{root}/{path}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return sdist


@contextlib.contextmanager
def unanswering_index() -> Iterator[str]:
    """A package index URL whose server takes connections and never answers: an installer
    asking it waits (until its own timeout, or the build's)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # the kernel completes each connection; nothing ever reads it
        yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"


def offline_index(wheelhouse: Path, cache: Path, **settings: str) -> dict[str, str]:
    """A worker's environment on a host whose pip uses only ``wheelhouse`` (its package
    index), with its environment cache in ``cache`` and uv's beside it."""
    return {
        "PIP_CONFIG_FILE": os.devnull,  # this machine's own pip.conf plays no part
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "UV_CACHE_DIR": str(cache.parent / "uv-cache"),
        "RUNYARD_ENV_CACHE_DIR": str(cache),
        **settings,
    }
