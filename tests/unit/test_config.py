"""Where the SDK and the CLI find the service and its token: the project's config holds
the URL, the user's credentials file the token (out of every folder that gets packed)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from runyard import config
from runyard.cli import context
from runyard.core import Workspace

URL = "http://127.0.0.1:8642"
TOKEN = "ryt_" + "credentials-test-token" * 2


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RUNYARD_* of the caller's; a home and config home of the test's own."""
    for name in list(os.environ):
        if name.startswith("RUNYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return project


def credentials(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "runyard" / "credentials.json"


def test_the_credentials_file_honours_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.credentials_path() == credentials(tmp_path)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    home = tmp_path / "home" / ".config" / "runyard" / "credentials.json"
    assert config.credentials_path() == home
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # ignored, as XDG says
    assert config.credentials_path() == home


def test_a_saved_token_is_owner_only_and_filed_under_its_url(tmp_path: Path) -> None:
    config.save_token(URL + "/", TOKEN)
    config.save_token("https://Runyard.Example.com", "ryt_other")

    path = credentials(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["services"] == {
        URL: {"token": TOKEN},
        "https://runyard.example.com": {"token": "ryt_other"},
    }
    assert config.stored_token(URL) == TOKEN
    assert config.stored_token("https://runyard.example.com/") == "ryt_other"
    assert config.stored_token("http://127.0.0.1:9999") is None
    assert config.stored_tokens() == [TOKEN, "ryt_other"]


def test_a_project_config_with_the_url_only_gets_its_token_from_the_credentials(
    clean_env: Path,
) -> None:
    config.write_config_file(clean_env / ".runyard" / "config.json", URL)
    config.save_token(URL, TOKEN)
    (clean_env / "notebooks").mkdir()
    os.chdir(clean_env / "notebooks")

    assert json.loads((clean_env / ".runyard" / "config.json").read_text()) == {"url": URL}
    assert config.load().token == TOKEN
    workspace = Workspace.from_config()
    assert (workspace.url, workspace.client.token) == (URL, TOKEN)
    assert context.client().token == TOKEN


def test_runyard_token_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_config_file(clean_env / "config.json", URL, "ryt_in_the_old_config")
    config.save_token(URL, TOKEN)
    monkeypatch.setenv("RUNYARD_TOKEN", "ryt_from_env")

    assert config.load().token == "ryt_from_env"
    assert Workspace.from_config().client.token == "ryt_from_env"


def test_an_old_config_holding_a_token_keeps_working(clean_env: Path) -> None:
    (clean_env / "config.json").write_text(json.dumps({"url": URL, "token": "ryt_old"}))
    config.save_token(URL, TOKEN)

    assert config.load().token == "ryt_old"
    assert Workspace.from_config().client.token == "ryt_old"


def test_a_url_from_the_environment_or_the_command_line_finds_its_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config.save_token(URL, TOKEN)
    monkeypatch.setenv("RUNYARD_URL", URL)

    assert config.load().token == TOKEN
    context.set_url(URL)
    try:
        assert context.client().token == TOKEN
    finally:
        context.set_url(None)
    monkeypatch.setenv("RUNYARD_URL", "http://127.0.0.1:1")
    assert config.load().token is None


def test_a_broken_credentials_file_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials(tmp_path).parent.mkdir(parents=True)
    credentials(tmp_path).write_text("{not json")
    monkeypatch.setenv("RUNYARD_URL", URL)  # a service is named: its token is looked up

    with pytest.raises(config.ConfigurationError, match=r"credentials\.json"):
        config.load()
    assert config.stored_tokens() == []  # the packer does not stop for it


def test_runyard_up_keeps_its_token_out_of_the_project_and_reuses_it(
    clean_env: Path, tmp_path: Path
) -> None:
    from runyard.cli.local_stack import LocalStack

    data = clean_env / ".runyard"
    first = LocalStack(host="127.0.0.1", port=8642, data_dir=data)
    token, config_path, fresh = first._client_config()

    assert fresh and token.startswith("ryt_") and config_path == data / "config.json"
    assert json.loads(config_path.read_text()) == {"url": URL}
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert config.stored_token(URL) == token
    assert first.token_file == str(credentials(tmp_path))
    assert config.load().token == token  # what the SDK and CLI find from the project

    # A later start, on another port: the same token, filed under the new URL too.
    again = LocalStack(host="127.0.0.1", port=9000, data_dir=data)
    assert again._client_config() == (token, config_path, False)
    assert json.loads(config_path.read_text()) == {"url": "http://127.0.0.1:9000"}
    assert config.stored_token("http://127.0.0.1:9000") == token

    # Another project's stack on the same URL has a token of its own; this one keeps its.
    other, _, _ = LocalStack("127.0.0.1", 8642, tmp_path / "other" / ".runyard")._client_config()
    assert other != token and config.stored_token(URL) == other
    assert LocalStack("127.0.0.1", 8642, data)._client_config()[0] == token
    assert config.stored_token(URL) == token


def test_runyard_up_moves_the_token_out_of_an_old_config(clean_env: Path) -> None:
    from runyard.cli.local_stack import LocalStack

    data = clean_env / ".runyard"
    config.write_config_file(data / "config.json", "http://127.0.0.1:7000", "ryt_from_before")

    stack = LocalStack(host="127.0.0.1", port=8642, data_dir=data)
    assert stack._client_config() == ("ryt_from_before", data / "config.json", False)
    assert json.loads((data / "config.json").read_text()) == {"url": URL}
    assert config.stored_token(URL) == "ryt_from_before"


def test_without_a_writable_config_home_the_token_waits_in_the_config(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only home: the token stays with the URL (0600, and never packed), and moves
    to the credentials file at the first start that can write it."""
    from runyard.cli.local_stack import LocalStack

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "a-file"))  # mkdir fails under it
    data = clean_env / ".runyard"

    stack = LocalStack("127.0.0.1", 8642, data)
    token, path, fresh = stack._client_config()

    assert fresh and json.loads(path.read_text()) == {"url": URL, "token": token}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.token_file == str(path)
    assert config.load().token == token

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert LocalStack("127.0.0.1", 8642, data)._client_config() == (token, path, False)
    assert json.loads(path.read_text()) == {"url": URL}
    assert config.stored_token(URL) == token


def test_without_any_config_the_error_says_where_it_looked(clean_env: Path, tmp_path: Path) -> None:
    """No RUNYARD_URL, no --url, no config file: never a guessed URL that then looks like
    a service that is down."""
    (clean_env / "deep").mkdir()
    os.chdir(clean_env / "deep")
    # An Azure workspace config.json (no url) is someone else's: passed over, and said so.
    (clean_env / "config.json").write_text(json.dumps({"subscription_id": "x"}))

    for find in (config.load, Workspace.from_config, Workspace, context.client):
        with pytest.raises(config.ConfigNotFound) as caught:
            find()
        message = caught.value.message
        assert message.startswith(
            f"no Runyard config found (looked in: {clean_env / 'deep'}, {clean_env}, "
        ), message
        assert f"passed over {clean_env / 'config.json'} (no url)" in message
        assert message.endswith("; run `runyard up` here or set RUNYARD_URL"), message
        assert caught.value.exit_code == 7
    assert "8642" not in message


def test_from_config_with_a_path_searches_from_there_or_reads_that_file(
    clean_env: Path, tmp_path: Path
) -> None:
    """azureml's from_config(path=...): a folder to search from (and up), or the file."""
    project = tmp_path / "elsewhere" / "project"
    config.write_config_file(project / ".runyard" / "config.json", URL)
    (project / "notebooks").mkdir()

    assert Workspace.from_config(path=project / "notebooks").url == URL
    assert Workspace.from_config(path=str(project / ".runyard" / "config.json")).url == URL
    with pytest.raises(config.ConfigNotFound, match=r"looked in: .*empty"):
        (tmp_path / "empty").mkdir()
        Workspace.from_config(path=tmp_path / "empty")
    with pytest.raises(config.ConfigNotFound, match=r"no Runyard config file at nowhere\.json"):
        Workspace.from_config(path="nowhere.json")
