"""The platform a Docker environment's wheels are chosen for: what the base image's Python
said of itself (machine, libc), as a target uv's ``--python-platform`` accepts."""

from __future__ import annotations

import subprocess

import pytest
from uv import find_uv_bin

from runyard.errors import ExecutionFailed
from worker.environments.images import platform_of


@pytest.mark.parametrize(
    ("libc", "platform"),
    [
        ("glibc 2.17", "x86_64-manylinux_2_17"),
        ("glibc 2.26", "x86_64-manylinux_2_17"),  # Amazon Linux 2
        ("glibc 2.27", "x86_64-manylinux_2_17"),  # Ubuntu 18.04
        ("glibc 2.28", "x86_64-manylinux_2_28"),  # Debian buster
        ("glibc 2.30", "x86_64-manylinux_2_28"),
        ("glibc 2.31", "x86_64-manylinux_2_31"),  # Debian bullseye
        ("glibc 2.36", "x86_64-manylinux_2_36"),  # Debian bookworm
        ("glibc 2.40", "x86_64-manylinux_2_40"),
        ("glibc 2.41", "x86_64-manylinux_2_40"),  # Debian trixie, python:3.x-slim today
        ("", "x86_64-unknown-linux-musl"),  # Alpine: no glibc
    ],
)
def test_an_images_glibc_gives_the_newest_manylinux_target_not_newer_than_it(
    libc: str, platform: str
) -> None:
    assert platform_of({"machine": "x86_64", "libc": libc}) == platform


def test_an_arm_image_is_named_as_uv_names_it() -> None:
    assert platform_of({"machine": "arm64", "libc": "glibc 2.41"}) == "aarch64-manylinux_2_40"


def test_a_glibc_older_than_any_wheel_target_fails_clearly() -> None:
    with pytest.raises(ExecutionFailed) as refused:
        platform_of({"machine": "x86_64", "libc": "glibc 2.12"})
    assert str(refused.value) == (
        "the base image's glibc 2.12 is older than 2.17, the oldest one Runyard installs "
        "wheels for (choose a newer base image)"
    )


def test_every_target_it_gives_is_one_the_installed_uv_accepts(tmp_path) -> None:
    """The table follows the uv this worker installs with: each glibc from 2.17 to 2.45
    (and musl), on both machines, gives a target uv resolves for."""
    targets = {
        platform_of({"machine": machine, "libc": libc})
        for machine in ("x86_64", "aarch64")
        for libc in ["", *(f"glibc 2.{minor}" for minor in range(17, 46))]
    }
    empty = tmp_path / "requirements.txt"
    empty.write_text("")
    refused = []
    for target in sorted(targets):
        done = subprocess.run(
            [find_uv_bin(), "pip", "compile", "--quiet", "--no-index", "--python-version",
             "3.11", "--python-platform", target, str(empty)],
            capture_output=True,
            text=True,
            env={"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "PATH": "/usr/bin:/bin"},
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            refused.append(f"{target}: {done.stderr.strip()[:200]}")
    assert refused == []
