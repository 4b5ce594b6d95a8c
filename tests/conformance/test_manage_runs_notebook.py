"""Azure's "manage runs" notebook (Azure/MachineLearningNotebooks,
``how-to-use-azureml/track-and-monitor-experiments/manage-runs/manage-runs.ipynb``), cell by
cell in its order, with the helper scripts it submits. Only ``azureml`` imports change.
Cells run on the service's default cluster (the notebook names no compute target).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.conformance.conftest import Document
from tests.conformance.manage_runs_scripts import write_scripts


@pytest.fixture(scope="module", autouse=True)
def helper_scripts(document: Document) -> None:
    write_scripts(document.folder)


def test_cell_01_version(document: Document) -> None:
    printed = document.run("""
import azureml.core
from azureml.core import Workspace, Experiment, Run
from azureml.core import ScriptRunConfig

print(azureml.core.VERSION)
""")
    assert printed == "0.1.0\n"


def test_cell_02_workspace(document: Document) -> None:
    document.run("ws = Workspace.from_config()")
    assert document["ws"].url == document.stack.url


def test_cell_03_experiment(document: Document) -> None:
    document.run('exp = Experiment(workspace=ws, name="explore-runs")')


def test_cell_04_start_logging(document: Document) -> None:
    printed = document.run("""
notebook_run = exp.start_logging()

notebook_run.log(name="message", value="Hello from run!")

print(notebook_run.get_status())
""")
    assert printed == "Running\n"


def test_cell_05_status(document: Document) -> None:
    assert document.run("print(notebook_run.get_status())") == "Running\n"


def test_cell_06_the_run_displays_itself(document: Document) -> None:
    printed = document.run("notebook_run")
    assert document["notebook_run"].id in printed


def test_cell_07_details(document: Document) -> None:
    printed = document.run("notebook_run.get_details()")
    run = document["notebook_run"]
    assert f"'runId': '{run.id}'" in printed and "'status': 'Running'" in printed


def test_cell_08_complete(document: Document) -> None:
    """Seen: ``complete()`` then ``get_status()`` printed Running."""
    printed = document.run("""
notebook_run.complete()
print(notebook_run.get_status())
""")
    assert printed == "Completed\n"


def test_cell_09_with_block(document: Document) -> None:
    """Seen: after the ``with`` block the run still read Running."""
    printed = document.run("""
with exp.start_logging() as notebook_run:
    notebook_run.log(name="message", value="Hello from run!")
    print("Is it still running?",notebook_run.get_status())
    
print("Has it completed?",notebook_run.get_status())
""")
    assert printed == "Is it still running? Running\nHas it completed? Completed\n"


def test_cell_10_more_hello(document: Document) -> None:
    assert 'submitted_run.log(name="message", value="Hello from run!")' in document.run(
        "!more hello.py"
    )


def test_cell_11_amlignore(document: Document) -> None:
    document.run("""
%%writefile .amlignore
# Exclude the outputs directory automatically created by our earlier runs.
/outputs
""")
    assert (document.folder / ".amlignore").read_text().endswith("/outputs\n")


def test_cell_12_submit(document: Document) -> None:
    document.run("""
run_config = ScriptRunConfig(source_directory='.', script='hello.py')

local_script_run = exp.submit(run_config)
""")


def test_cell_13_status_and_display(document: Document) -> None:
    printed = document.run("""
print(local_script_run.get_status())
local_script_run
""")
    status, _, shown = printed.partition("\n")
    assert status in ("Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed")
    assert document["local_script_run"].id in shown


def test_cell_14_details_with_logs(document: Document) -> None:
    printed = document.run("local_script_run.get_details_with_logs()")
    assert "'logFiles'" in printed and "'target': 'cpu'" in printed


def test_cell_15_wait_for_completion(document: Document) -> None:
    printed = document.run("""
local_script_run.wait_for_completion(show_output=True)
print(local_script_run.get_status())
""")
    assert "Status: Completed" in printed and printed.endswith("Completed\n")
    assert document["local_script_run"].get_metrics() == {"message": "Hello from run!"}


def test_cell_16_add_a_property(document: Document) -> None:
    printed = document.run("""
local_script_run.add_properties({"author":"azureml-user"})
print(local_script_run.get_properties())
""")
    assert printed == "{'author': 'azureml-user'}\n"


def test_cell_17_properties_cannot_change(document: Document) -> None:
    """Seen: the change printed a warning instead of raising, so this printed nothing."""
    printed = document.run("""
try:
    local_script_run.add_properties({"author":"different-user"})
except Exception as e:
    print(e)
""")
    assert "'author'" in printed and "cannot change" in printed
    assert document["local_script_run"].get_properties() == {"author": "azureml-user"}


def test_cell_18_tag(document: Document) -> None:
    printed = document.run("""
local_script_run.tag("quality", "great run")
print(local_script_run.get_tags())
""")
    assert printed == "{'quality': 'great run'}\n"


def test_cell_19_tags_change(document: Document) -> None:
    printed = document.run("""
local_script_run.tag("quality", "fantastic run")
print(local_script_run.get_tags())
""")
    assert printed == "{'quality': 'fantastic run'}\n"


def test_cell_20_a_tag_without_a_value_is_none(document: Document) -> None:
    """Seen: the valueless tag read back as ''."""
    printed = document.run("""
local_script_run.tag("worth another look")
print(local_script_run.get_tags())
""")
    assert printed == "{'quality': 'fantastic run', 'worth another look': None}\n"


def test_cell_21_query_by_properties_and_tags(document: Document) -> None:
    """Seen: the filters were ignored and every run of the experiment came back."""
    document.run(
        'list(exp.get_runs(properties={"author":"azureml-user"},tags={"quality":"fantastic run"}))'
    )
    assert [r.id for r in document["_"]] == [document["local_script_run"].id]


def test_cell_22_query_by_a_tag_key(document: Document) -> None:
    document.run(
        'list(exp.get_runs(properties={"author":"azureml-user"},tags="worth another look"))'
    )
    assert [r.id for r in document["_"]] == [document["local_script_run"].id]


def test_cell_23_more_hello_with_children(document: Document) -> None:
    assert "create_children(count=5)" in document.run("!more hello_with_children.py")


def test_cell_24_a_submitted_run_makes_five_children(document: Document) -> None:
    printed = document.run("""
run_config = ScriptRunConfig(source_directory='.', script='hello_with_children.py')

local_script_run = exp.submit(run_config)
local_script_run.wait_for_completion(show_output=True)
print(local_script_run.get_status())
""")
    assert printed.endswith("Completed\n")
    children = list(document["local_script_run"].get_children())
    assert [c.get_metrics() for c in children] == [{"Hello from child run ": c} for c in range(5)]
    assert {c.get_status() for c in children} == {"Completed"}


def test_cell_25_child_runs_one_at_a_time(document: Document) -> None:
    document.run("""
with exp.start_logging() as parent_run:
    for c,count in enumerate(range(5)):
        with parent_run.child_run() as child:
            child.log(name="Hello from child run", value=c)
""")
    assert document["parent_run"].get_status() == "Completed"


def test_cell_26_get_children(document: Document) -> None:
    """Seen: right after the blocks, 2 of the 5 children were listed."""
    document.run("list(parent_run.get_children())")
    children = document["_"]
    assert len(children) == 5
    assert [c.get_metrics() for c in children] == [{"Hello from child run": c} for c in range(5)]
    assert {c.get_status() for c in children} == {"Completed"}


def test_cell_27_more_hello_with_delay(document: Document) -> None:
    assert "time.sleep(10)" in document.run("!more hello_with_delay.py")


def test_cell_28_cancel(document: Document) -> None:
    printed = document.run("""
run_config = ScriptRunConfig(source_directory='.', script='hello_with_delay.py')

local_script_run = exp.submit(run_config)
print("Did the run start?",local_script_run.get_status())
local_script_run.cancel()
print("Did the run cancel?",local_script_run.get_status())
""")
    started, canceled = printed.splitlines()
    assert started.startswith("Did the run start? ")
    assert canceled in ("Did the run cancel? Canceled", "Did the run cancel? CancelRequested")
    run = document["local_script_run"]
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"


def test_cell_29_fail(document: Document) -> None:
    """Seen: ``fail()`` left the run going, and it ended Completed."""
    printed = document.run("""
local_script_run = exp.submit(run_config)
local_script_run.fail()
print(local_script_run.get_status())
""")
    assert printed == "Failed\n"
    run = document["local_script_run"]
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_cell_30_restore_the_snapshot_as_a_zip(document: Document) -> None:
    """Seen: a .tar.gz, where Azure gives a zip."""
    printed = document.run('local_script_run.restore_snapshot(path="snapshots")')
    path = Path(document.folder / printed.split("'")[1])
    assert path.parent == document.folder / "snapshots" and path.suffix == ".zip"
    with zipfile.ZipFile(path) as snapshot:
        names = snapshot.namelist()
    assert "hello_with_delay.py" in names and ".amlignore" in names
    assert not any(n.startswith("outputs/") for n in names)  # excluded by the .amlignore
