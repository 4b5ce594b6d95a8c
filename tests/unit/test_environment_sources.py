"""The worker host's package sources as uv sees them: pip's configuration (read by pip
itself) mapped to uv's flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.environments.sources import (
    from_environment,
    parse_config_list,
    read_pip_config,
    uv_arguments,
)


def test_a_private_mirror_and_extra_indexes_become_uv_indexes() -> None:
    listed = (
        "global.index-url='https://user:pw@mirror.corp/simple'\n"
        "global.extra-index-url='https://a.corp/simple https://b.corp/simple'\n"
        "global.constraint='/etc/pip/constraints.txt'\n"
        "global.cert='/etc/ssl/ca.pem'\n"
    )
    assert uv_arguments(parse_config_list(listed)) == [
        "--index-url", "https://user:pw@mirror.corp/simple",
        "--extra-index-url", "https://a.corp/simple",
        "--extra-index-url", "https://b.corp/simple",
        "--constraint", "/etc/pip/constraints.txt",
    ]  # fmt: skip


def test_an_offline_wheel_folder_asks_no_index_at_all() -> None:
    listed = (
        "global.extra-index-url='file:///opt/pypi/simple'\n"
        "global.find-links='/opt/wheels /srv/more-wheels'\n"
        "global.no-index='true'\n"
    )
    assert uv_arguments(parse_config_list(listed)) == [
        "--no-index",
        "--find-links", "/opt/wheels",
        "--find-links", "/srv/more-wheels",
    ]  # fmt: skip


def test_variables_override_install_which_overrides_global() -> None:
    listed = (
        "global.index-url='https://global/simple'\n"
        "install.index-url='https://install/simple'\n"
        "global.find-links='/global'\n"
        ":env:.find-links='/from-env'\n"
        "freeze.index-url='https://not-for-install/simple'\n"
    )
    options = parse_config_list(listed)
    assert options == {"index-url": "https://install/simple", "find-links": "/from-env"}


@pytest.mark.parametrize(
    ("value", "no_index"), [("1", True), ("yes", True), ("0", False), ("off", False)]
)
def test_pip_no_index_is_read_as_pip_reads_it(value: str, no_index: bool) -> None:
    options = from_environment({"PIP_NO_INDEX": value, "PIP_INDEX_URL": "https://m/simple"})
    assert ("--no-index" in uv_arguments(options)) is no_index
    assert ("--index-url" in uv_arguments(options)) is not no_index


def test_nothing_configured_leaves_uv_to_its_own_defaults() -> None:
    assert uv_arguments(parse_config_list("")) == []
    assert from_environment({"UV_INDEX_URL": "https://uv/simple", "PATH": "/bin"}) == {}


def test_pip_itself_reads_the_hosts_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip("this Python has no pip")
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n[install]\nno-index = 1\n"
    )
    for name in ("PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    arguments = uv_arguments(parse_config_list(read_pip_config()))
    # (the machine's own pip.conf may add its constraints file: pip reads it too)
    assert arguments[:3] == ["--no-index", "--find-links", str(tmp_path / "wheels")]
    assert "https://mirror.example/simple" not in arguments
