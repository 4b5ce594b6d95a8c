"""The scripts Azure's manage-runs notebook and how-to submit, as they sit next to the
notebook (Azure/MachineLearningNotebooks, ``how-to-use-azureml/training/manage-runs/``),
written into a document's folder with their imports changed."""

from __future__ import annotations

from pathlib import Path

from tests.support.notebook import runyard_imports

HELLO_PY = """\
# Copyright (c) Microsoft. All rights reserved.
# Licensed under the MIT license.

from azureml.core import Run

submitted_run = Run.get_context()
submitted_run.log(name="message", value="Hello from run!")
"""

HELLO_WITH_CHILDREN_PY = """\
# Copyright (c) Microsoft. All rights reserved.
# Licensed under the MIT license.

from azureml.core import Run

run = Run.get_context()

child_runs = run.create_children(count=5)
for c, child in enumerate(child_runs):
    child.log(name="Hello from child run ", value=c)
    child.complete()
"""

HELLO_WITH_DELAY_PY = """\
# Copyright (c) Microsoft. All rights reserved.
# Licensed under the MIT license.

import time

print("Wait for 10 seconds..")
time.sleep(10)
print("Done waiting")
"""


def write_scripts(folder: Path) -> None:
    for name, text in (
        ("hello.py", HELLO_PY),
        ("hello_with_children.py", HELLO_WITH_CHILDREN_PY),
        ("hello_with_delay.py", HELLO_WITH_DELAY_PY),
    ):
        (folder / name).write_text(runyard_imports(text))
