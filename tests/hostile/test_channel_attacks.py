"""A run attacks what its worker reads of its folders: the channel file, the staging folder,
``./outputs``. The worker reads them through descriptors it took before the run started
(``worker/run_folder.py``), so links lead nowhere and FIFOs block nothing."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.hostile.conftest import Target

PLANT = """\
import json, os, time
channel = os.environ["RUNYARD_TRACKING_DIR"]
me = os.environ["RUNYARD_RUN_ID"]
"""


FIFO_AND_WAIT = """\
path = os.path.join(channel, "events.jsonl")
os.unlink(path)
os.mkfifo(path)
print("planted", flush=True)
time.sleep(600)
"""


def test_a_staging_folder_swapped_for_a_link_to_the_host_reaches_nothing(
    target: Target, tmp_path: Path
) -> None:
    """Seen: the worker followed files -> a host folder, uploaded a host file into the
    run (which could then download it) and deleted the original."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret_key").write_text("the service's signing key")
    script = PLANT + (
        "os.rename(os.path.join(channel, 'files'), os.path.join(channel, 'files.old'))\n"
        f"os.symlink({str(host)!r}, os.path.join(channel, 'files'))\n"
        "event = {'r': me, 'k': 'file', 'n': 'outputs/stolen', 'f': 'secret_key', 't': 1.0}\n"
        "with open(os.path.join(channel, 'events.jsonl'), 'a') as f:\n"
        "    f.write(json.dumps(event) + '\\n')\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    assert "outputs/stolen" not in run.get_file_names()
    assert (host / "secret_key").read_text() == "the service's signing key"
    target.assert_still_serving()


def test_a_channel_file_swapped_for_a_fifo_hangs_nothing(target: Target) -> None:
    """Seen: the forwarder's open() blocked for good; the run stayed Running, its slot was
    lost and cancel no longer worked."""
    script = (
        PLANT
        + (
            "from runyard.core import Run\n"
            "Run.get_context().log('before', 1)\n"
            "Run.get_context().flush()\n"
        )
        + FIFO_AND_WAIT
    )
    run = target.submit(script)
    target.wait_for_output(run, "planted")
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    assert run.get_metrics() == {"before": 1}
    target.assert_still_serving()


def test_a_restarted_worker_recovers_a_run_that_planted_a_fifo(target: Target, workers) -> None:
    """Seen: a restarted worker hung again while recovering the folder."""
    target_worker = workers.started[-1]
    name = target_worker.args[target_worker.args.index("--name") + 1]
    run = target.submit(PLANT + FIFO_AND_WAIT)
    target.wait_for_output(run, "planted")
    target_worker.send_signal(signal.SIGKILL)
    target_worker.wait(30)
    workers.start(target.cluster, name=name)  # the same worker, a new life
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["message"] == "worker restarted while the run was active"
    target.assert_still_serving()


def test_a_line_of_a_hundred_megabytes_without_an_end_is_skipped(target: Target) -> None:
    script = PLANT + (
        "from runyard.core import Run\n"
        "with open(os.path.join(channel, 'events.jsonl'), 'ab') as f:\n"
        "    for _ in range(100):\n"
        "        f.write(b'x' * (1 << 20))\n"
        "    f.write(b'\\n')\n"
        "Run.get_context().log('after', 1)\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics() == {"after": 1}
    target.assert_still_serving()


def test_links_and_loops_in_its_folders_lead_nowhere(target: Target, tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_text("host")
    script = PLANT + (
        "os.makedirs('outputs/deep', exist_ok=True)\n"
        "open('outputs/real.txt', 'w').write('mine')\n"
        "os.symlink('..', 'outputs/deep/up')\n"
        "os.symlink('b', 'outputs/a')\n"
        "os.symlink('a', 'outputs/b')\n"
        f"os.symlink({str(host)!r}, 'outputs/host.txt')\n"
        "os.symlink('files', os.path.join(channel, 'files', 'self'))\n"
        "os.mkfifo('outputs/fifo')\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_file_names() == ["outputs/real.txt", "user_logs/std_log.txt"]
    assert host.read_text() == "host"
    target.assert_still_serving()
