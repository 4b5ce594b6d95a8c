"""Azure ML v1's how-to "Start, monitor, and track run history" (first published as "Start,
monitor, and cancel training runs in Python"; MicrosoftDocs, ``articles/machine-learning/
v1/how-to-track-monitor-analyze-runs.md``), every Python block in its order. Only imports
change. Where the doc leans on something it never defines, a harness step says so.
"""

from __future__ import annotations

import pytest

from tests.conformance.conftest import Document
from tests.conformance.manage_runs_scripts import write_scripts
from tests.support.notebook import runyard_imports

D16_PARENT_PY = """\
# parent.py
# This script controls the launching of child scripts
from azureml.core import Run, ScriptRunConfig

compute_target = ws.compute_targets["gpu-cluster"]

run = Run.get_context()

child_args = ['Apple', 'Banana', 'Orange']
for arg in child_args: 
    run.log('Status', f'Launching {arg}')
    child_config = ScriptRunConfig(source_directory=".", script='child.py', arguments=['--fruit', arg], compute_target=compute_target)
    # Starts the run asynchronously
    run.submit_child(child_config)

# Experiment will "complete" successfully at this point. 
# Instead of returning immediately, block until child runs complete

for child in run.get_children():
    child.wait_for_completion()
"""

D17_IN_CHILD = """\
## In child run script
child_run = Run.get_context()
child_run.parent.id
"""

D19_LOG_TO_ROOT = """\
# in child (or even grandchild) run

def root_run(self : Run) -> Run :
    if self.parent is None : 
        return self
    return root_run(self.parent)

current_child_run = Run.get_context()
root_run(current_child_run).log("MyMetric", f"Data from child run {current_child_run.id}")

"""

C_PARENT_SCRIPT = """\
## In parent run script
parent_run = Run.get_context()
child_run_config = ScriptRunConfig(source_directory='.', script='child_script.py')
parent_run.submit_child(child_run_config)
"""


@pytest.fixture(scope="module", autouse=True)
def scripts(document: Document) -> None:
    """The scripts the doc submits (those of the manage-runs notebook)."""
    write_scripts(document.folder)


def test_d01_check_the_sdk_version(document: Document) -> None:
    """The prerequisites' check; it assumes ``import azureml.core`` (an import, added)."""
    assert document.run("import azureml.core\nprint(azureml.core.VERSION)") == "0.1.0\n"


def test_d02_set_up(document: Document) -> None:
    document.run("""
import azureml.core
from azureml.core import Workspace, Experiment, Run
from azureml.core import ScriptRunConfig

ws = Workspace.from_config()
exp = Experiment(workspace=ws, name="explore-runs")
""")


def test_d03_start_a_run(document: Document) -> None:
    document.run("""
notebook_run = exp.start_logging()
notebook_run.log(name="message", value="Hello from run!")
""")


def test_d04_status(document: Document) -> None:
    assert document.run("print(notebook_run.get_status())") == "Running\n"


def test_d05_details(document: Document) -> None:
    printed = document.run("print(notebook_run.get_details())")
    assert f"'runId': '{document['notebook_run'].id}'" in printed


def test_d06_complete(document: Document) -> None:
    printed = document.run("""
notebook_run.complete()
print(notebook_run.get_status())
""")
    assert printed == "Completed\n"


def test_d07_with_block(document: Document) -> None:
    printed = document.run("""
with exp.start_logging() as notebook_run:
    notebook_run.log(name="message", value="Hello from run!")
    print(notebook_run.get_status())

print(notebook_run.get_status())
""")
    assert printed == "Running\nCompleted\n"


def test_local_run_the_doc_uses_before_defining_it(document: Document) -> None:
    """Harness: the tag blocks use ``local_run``, a submitted run the doc defines later."""
    document.run("local_run = exp.submit(ScriptRunConfig(source_directory='.', script='hello.py'))")
    assert document["local_run"].wait_for_completion()["status"] == "Completed"


def test_d08_add_a_property(document: Document) -> None:
    printed = document.run("""
local_run.add_properties({"author":"azureml-user"})
print(local_run.get_properties())
""")
    assert printed == "{'author': 'azureml-user'}\n"


def test_d09_a_property_cannot_change(document: Document) -> None:
    printed = document.run("""
try:
    local_run.add_properties({"author":"different-user"})
except Exception as e:
    print(e)
""")
    assert "cannot change" in printed


def test_d10_tags_change(document: Document) -> None:
    printed = document.run("""
local_run.tag("quality", "great run")
print(local_run.get_tags())

local_run.tag("quality", "fantastic run")
print(local_run.get_tags())
""")
    assert printed == "{'quality': 'great run'}\n{'quality': 'fantastic run'}\n"


def test_d11_a_tag_without_a_value(document: Document) -> None:
    printed = document.run("""
local_run.tag("worth another look")
print(local_run.get_tags())
""")
    assert printed == "{'quality': 'fantastic run', 'worth another look': None}\n"


def test_d12_query_properties_and_tags(document: Document) -> None:
    document.run("""
list(exp.get_runs(properties={"author":"azureml-user"},tags={"quality":"fantastic run"}))
list(exp.get_runs(properties={"author":"azureml-user"},tags="worth another look"))
""")
    local_run = document["local_run"]
    assert [r.id for r in document["_"]] == [local_run.id]  # the second line's answer
    first = document["exp"].get_runs(
        properties={"author": "azureml-user"}, tags={"quality": "fantastic run"}
    )  # the first line's, whose value the block does not keep
    assert [r.id for r in first] == [local_run.id]
    other = document["exp"].get_runs(properties={"author": "azureml-user"}, tags={"quality": "x"})
    assert list(other) == []


def test_d13_cancel(document: Document) -> None:
    printed = document.run("""
src = ScriptRunConfig(source_directory='.', script='hello_with_delay.py')
local_run = exp.submit(src)
print(local_run.get_status())

local_run.cancel()
print(local_run.get_status())
""")
    assert printed.splitlines()[1] in ("Canceled", "CancelRequested")
    assert document["local_run"].wait_for_completion(raise_on_error=False)["status"] == "Canceled"


def test_d14_fail(document: Document) -> None:
    printed = document.run("""
local_run = exp.submit(src)
local_run.fail()
print(local_run.get_status())
""")
    assert printed == "Failed\n"


def test_d15_child_runs(document: Document) -> None:
    printed = document.run("""
!more hello_with_children.py
src = ScriptRunConfig(source_directory='.', script='hello_with_children.py')

local_run = exp.submit(src)
local_run.wait_for_completion(show_output=True)
print(local_run.get_status())

with exp.start_logging() as parent_run:
    for c,count in enumerate(range(5)):
        with parent_run.child_run() as child:
            child.log(name="Hello from child run", value=c)
""")
    assert "create_children(count=5)" in printed and printed.endswith("Completed\n")
    assert len(list(document["local_run"].get_children())) == 5
    assert len(list(document["parent_run"].get_children())) == 5


@pytest.mark.skip(reason="parent.py uses `ws` (no workspace exists inside a run) and a "
                  "child.py the doc never shows; submit_child itself is run below")  # fmt: skip
def test_d16_submit_child_runs_from_a_parent_script(document: Document) -> None:
    (document.folder / "parent.py").write_text(runyard_imports(D16_PARENT_PY))


def test_d17_and_d19_a_child_finds_its_parent_and_logs_to_its_root(document: Document) -> None:
    """Both blocks are "in a child run script": a child submitted from a notebook run
    (harness) runs them; its root then holds the metric."""
    (document.folder / "child.py").write_text(
        "from azureml.core import Run\n" + D17_IN_CHILD + "\n" + D19_LOG_TO_ROOT
    )
    (document.folder / "child.py").write_text(
        runyard_imports((document.folder / "child.py").read_text())
    )
    document.run("""
root = exp.start_logging()
child = root.submit_child(ScriptRunConfig(source_directory='.', script='child.py'))
child.wait_for_completion()
""")
    child, root = document["child"], document["root"]
    assert child.parent.id == root.id
    assert root.get_metrics() == {"MyMetric": f"Data from child run {child.id}"}
    root.complete()


def test_d18_children_of_a_run(document: Document) -> None:
    assert "generator" in document.run("print(parent_run.get_children())")


def test_2019_version_submits_a_child_from_inside_a_run(document: Document) -> None:
    """The first version's block "in parent run script" (its child_script.py is not shown:
    the harness gives one that logs)."""
    (document.folder / "child_script.py").write_text(
        "from runyard.core import Run\nRun.get_context().log('child', 1)\n"
    )
    (document.folder / "parent_script.py").write_text(
        runyard_imports("from azureml.core import Run, ScriptRunConfig\n" + C_PARENT_SCRIPT)
    )
    document.run("""
parent = exp.submit(ScriptRunConfig(source_directory='.', script='parent_script.py'))
parent.wait_for_completion()
""")
    (child,) = document["parent"].get_children()
    assert child.wait_for_completion()["status"] == "Completed"
    assert child.get_metrics() == {"child": 1}
