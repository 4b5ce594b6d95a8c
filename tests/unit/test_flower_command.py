"""`runyard flower` needs a password, unless told --no-auth on a loopback address; the
password and the broker URL reach Flower through its environment, never its argv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from runyard.cli.main import main

BROKER = "redis://:broker-password@redis:6379/0"


class Executed(Exception):
    """os.execve never returns: the test stops there and looks at what it was given."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWER_BASIC_AUTH", "FLOWER_UNAUTHENTICATED_API"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNYARD_REDIS_URL", BROKER)

    def execve(_path: str, argv: list[str], env: dict[str, str]) -> Any:
        raise Executed(argv, env)

    monkeypatch.setattr("os.execve", execve)


def flower(monkeypatch: pytest.MonkeyPatch, *args: str) -> Executed:
    monkeypatch.setattr(sys, "argv", ["runyard", "flower", *args])
    with pytest.raises(Executed) as started:
        main()
    return started.value


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["runyard", "flower", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_flower_without_a_password_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert "Flower needs a password" in refused(monkeypatch, capsys)
    assert "Flower needs a password" in refused(monkeypatch, capsys, "--address", "0.0.0.0")


def test_flower_takes_its_password_from_the_environment_not_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:s3cret")
    started = flower(monkeypatch, "--address", "0.0.0.0", "--port", "5555")
    assert started.env["FLOWER_BASIC_AUTH"] == "admin:s3cret"
    assert started.env["CELERY_BROKER_URL"] == BROKER
    assert "s3cret" not in " ".join(started.argv)
    assert "broker-password" not in " ".join(started.argv)
    assert "--address=0.0.0.0" in started.argv


def test_flower_reads_its_password_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "flower-auth"
    secret.write_text("admin:one\nops:two\n")
    started = flower(monkeypatch, "--basic-auth-file", str(secret))
    assert started.env["FLOWER_BASIC_AUTH"] == "admin:one,ops:two"
    assert "one" not in " ".join(started.argv[1:])


@pytest.mark.parametrize("pair", ["admin", "admin:", ":password", "admin:pa,ss"])
def test_flower_refuses_a_malformed_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path, pair: str
) -> None:
    secret = tmp_path / "flower-auth"
    secret.write_text(pair + "\n")
    assert "user:password" in refused(monkeypatch, capsys, "--basic-auth-file", str(secret))


def test_no_auth_serves_flower_on_a_loopback_address_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for address in ("127.0.0.1", "::1", "localhost"):
        started = flower(monkeypatch, "--no-auth", "--address", address)
        assert "FLOWER_BASIC_AUTH" not in started.env
    for address in ("0.0.0.0", "", "10.0.0.5", "flower.example.com"):
        message = refused(monkeypatch, capsys, "--no-auth", "--address", address)
        assert "loopback address only" in message


def test_no_auth_and_a_password_contradict_each_other(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:s3cret")
    assert "give one or the other" in refused(monkeypatch, capsys, "--no-auth")


def test_flower_refuses_to_open_its_api_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:s3cret")
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
    assert "FLOWER_UNAUTHENTICATED_API" in refused(monkeypatch, capsys)
