"""Run published Azure ML code cell by cell, as a notebook would, with only its imports changed.

Each document gets one IPython shell (no notebook front end), so magics work as written
(``!more hello.py``, ``%%writefile .amlignore``, ``%matplotlib inline``) and a cell's last
expression is displayed. ``Notebook.run`` raises if the cell raised: a test then fails with
the cell's own traceback.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from dataclasses import dataclass
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

# The only edits a cell gets are to its import lines: ``azureml`` imports become ``runyard``
# imports binding the same names (``import azureml.core`` binds ``azureml``, so that
# ``azureml.core.VERSION`` works), and scikit-learn's long-removed ``sklearn.externals.joblib``
# becomes ``joblib`` itself (the same module, moved out in scikit-learn 0.23).
_IMPORT_PACKAGE = re.compile(r"^(\s*)import azureml\.core\s*$", re.MULTILINE)
_FROM_IMPORT = re.compile(r"^(\s*)from azureml\.", re.MULTILINE)
_OLD_JOBLIB = re.compile(r"^(\s*)from sklearn\.externals import joblib\s*$", re.MULTILINE)


def runyard_imports(source: str) -> str:
    """The cell with its imports changed as above; nothing else changes."""
    source = _IMPORT_PACKAGE.sub(r"\1import runyard.core, runyard as azureml", source)
    source = _OLD_JOBLIB.sub(r"\1import joblib", source)
    return _FROM_IMPORT.sub(r"\1from runyard.", source)


class _Shell(InteractiveShell):
    """A shell with no GUI: ``%matplotlib inline`` needs none."""

    def enable_gui(self, gui: Any = None) -> None:
        return None


@dataclass
class CellResult:
    stdout: str
    value: Any  # what the cell's last expression displayed (None if nothing)


class CellFailed(AssertionError):
    pass


class Notebook:
    def __init__(self) -> None:
        config = Config()
        config.HistoryManager.hist_file = ":memory:"  # a cell ending in ";" shows nothing
        self.shell = _Shell(config=config)
        self.shell.system = self._system  # `!cmd`, its output captured like a notebook's
        self.shell.colors = "nocolor"

    def run(self, source: str) -> CellResult:
        """Run one published cell (dedented, imports changed) in the shared namespace."""
        cell = runyard_imports(textwrap.dedent(source).strip("\n") + "\n")
        with capture_output() as captured:
            result = self.shell.run_cell(cell, store_history=True)
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            raise CellFailed(f"the cell raised {error!r}:\n{cell}\n{captured.stdout}")
        return CellResult(captured.stdout, result.result)

    def __getitem__(self, name: str) -> Any:
        return self.shell.user_ns[name]

    def _system(self, command: str) -> None:
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        print(done.stdout + done.stderr, end="")

    def close(self) -> None:
        self.shell.reset(new_session=False)
        self.shell.clear_instance()
