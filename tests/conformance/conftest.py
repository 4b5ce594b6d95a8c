"""A live stack for published Azure ML code: API, scheduler, a default cluster and its worker.

Each document (one test module) runs in its own project folder with its own IPython shell,
as a notebook would; ``Workspace.from_config()`` finds the service through a ``config.json``
in the folder above, as Azure's finds its workspace. Cells run in the module's order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.notebook import Notebook
from tests.support.services import ADMIN_TOKEN, Stack, stop_process

CLUSTER = "cpu"


@dataclass
class Document:
    """A notebook session on one document: its shell, its folder, the stack behind it."""

    notebook: Notebook
    folder: Path
    stack: Stack

    def run(self, source: str) -> str:
        """Run a published cell; returns what it printed (and displayed)."""
        return self.notebook.run(source).stdout

    def __getitem__(self, name: str) -> object:
        return self.notebook[name]


@pytest.fixture(scope="module")
def document(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Document]:
    stack.client().create_cluster(CLUSTER, nodes=2, is_default=True)
    worker = stack.start_worker(CLUSTER, slots=2)
    home = tmp_path_factory.mktemp("notebooks")
    (home / "config.json").write_text(json.dumps({"url": stack.url, "token": ADMIN_TOKEN}))
    folder = home / "project"
    folder.mkdir()
    saved_cwd, saved_url = Path.cwd(), os.environ.pop("RUNYARD_URL", None)
    os.chdir(folder)
    notebook = Notebook()
    try:
        yield Document(notebook, folder, stack)
    finally:
        notebook.close()
        os.chdir(saved_cwd)
        if saved_url is not None:
            os.environ["RUNYARD_URL"] = saved_url
        stop_process(worker)
