"""No secret in a snapshot: `runyard up` in a project folder, then the seed's own submit,
``ScriptRunConfig(source_directory='./', script='train.py')`` with ``Workspace.from_config()``.

The project folder is the one the issue saw leak: `runyard up`'s data in ``./.runyard``
(its key, its database, the snapshots it stored), the notebook's own ``config.json`` with
the admin token, and a note where someone pasted the token. Neither the stored snapshot
(downloaded through the API) nor the run's working folder (scanned by the run itself) may
hold the admin token, the key that signs run tokens, or a database.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx

from tests.support.services import free_port, runyard, wait_until

REPO = Path(__file__).resolve().parents[2]

# The run's own check of its working folder, with no secret in it (it would be left out):
# any Runyard API token at all, the secret key by its hash, any SQLite database.
SCAN = r"""
import hashlib, json, os, re, sys

key_hash = json.load(open("expected.json"))["secret_key_sha256"]
token = re.compile(rb"ryt" rb"_[A-Za-z0-9_-]{20,}")
hex64 = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
found, files = [], 0
for folder, _, names in os.walk("."):
    for name in names:
        path = os.path.join(folder, name)
        files += 1
        data = open(path, "rb").read()
        if token.search(data):
            found.append(path + ": a Runyard token")
        if any(hashlib.sha256(m).hexdigest() == key_hash for m in hex64.findall(data)):
            found.append(path + ": the secret key")
        if data.startswith(b"SQLite format 3\0"):
            found.append(path + ": a database")
print("scanned", files, "files:", "CLEAN" if not found else "FOUND " + "; ".join(found))
sys.exit(1 if found else 0)
"""

# The seed's code (Azure's "log and monitor runs" how-to), run from the project folder.
SEED = """
import json, sys
from runyard.core import Experiment, ScriptRunConfig, Workspace

ws = Workspace.from_config()
config = ScriptRunConfig(source_directory='./', script='train.py')
ids = []
for _ in range(2):
    run = Experiment(ws, 'no-secrets').submit(config)
    run.wait_for_completion(show_output=True)
    ids.append(run.id)
print(json.dumps(ids))
"""


def test_no_secret_reaches_a_snapshot_or_a_run_from_a_runyard_up_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(REPO),  # this checkout's runyard, from any folder
        RUNYARD_HEARTBEAT_INTERVAL="0.5",
    )
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    up = subprocess.Popen(
        runyard("up", "--port", str(port)),  # the default data folder: ./.runyard
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: f"Runyard API listening on {url}" in (tmp_path / "up.log").read_text(),
            60,
            0.2,
            what="runyard up",
        )
        # The project config holds the URL only; the token is in the credentials file.
        data = project / ".runyard"
        assert json.loads((data / "config.json").read_text()) == {"url": url}
        credentials = tmp_path / "xdg" / "runyard" / "credentials.json"
        assert credentials.stat().st_mode & 0o777 == 0o600
        token = json.loads(credentials.read_text())["services"][url]["token"]
        secret_key = (data / "secret_key").read_text().strip()
        assert len(token) > 20 and len(secret_key) == 64
        assert (data / "runyard.db").is_file()

        # What a user keeps in a notebook folder: Azure-style config, a pasted token.
        (project / "config.json").write_text(json.dumps({"url": url, "token": token}))
        (project / "setup-notes.md").write_text(f"export RUNYARD_TOKEN={token}\n")
        (project / "train.py").write_text(SCAN)
        key_hash = hashlib.sha256(secret_key.encode()).hexdigest()
        (project / "expected.json").write_text(json.dumps({"secret_key_sha256": key_hash}))

        # The CLI, from the project with no RUNYARD_* set, finds the token for the URL.
        subprocess.run(
            runyard("cluster", "create", "cpu", "--nodes", "1", "--default"),
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
        seed = subprocess.run(
            [sys.executable, "-c", SEED],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert seed.returncode == 0, seed.stdout + seed.stderr
        # The run's own scan of its working folder found nothing.
        assert seed.stdout.count("scanned 2 files: CLEAN") == 2, seed.stdout
        # Each submit said, on one line, what it left out.
        notes = [line for line in seed.stderr.splitlines() if "not in the snapshot" in line]
        assert len(notes) == 2, seed.stderr
        for item in (".runyard/", "config.json", "setup-notes.md"):
            assert item in notes[0], notes[0]
        assert token not in seed.stderr and secret_key not in seed.stderr

        # The stored snapshots, downloaded through the API: the same for both submits
        # (the data folder growing in between changed nothing), and clean.
        headers = {"Authorization": f"Bearer {token}"}
        ids = json.loads(seed.stdout.strip().splitlines()[-1])
        runs = [httpx.get(f"{url}/api/v1/runs/{i}", headers=headers).json() for i in ids]
        assert [r["status"] for r in runs] == ["Completed", "Completed"]
        digests = {r["snapshot_digest"] for r in runs}
        assert len(digests) == 1
        answer = httpx.get(f"{url}/api/v1/snapshots/{digests.pop()}", headers=headers)
        assert answer.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert sorted(files) == ["expected.json", "train.py"]
        archive = gzip.decompress(answer.content)  # every byte of it, headers included
        assert token.encode() not in archive and secret_key.encode() not in archive
        assert b"SQLite format 3\0" not in archive
        assert not re.search(rb"ryt_[A-Za-z0-9_-]{20,}", archive)
    finally:
        _stop(up)
        log.close()


def _stop(up: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Ctrl+C, as a person would; everything it started goes with it (else killed)."""
    found = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True, text=True)
    started = [int(p) for p in found.stdout.split()]
    up.send_signal(signal.SIGINT)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        for pid in [up.pid, *started]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        up.wait()
        raise
