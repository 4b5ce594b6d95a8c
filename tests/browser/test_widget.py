"""``RunDetails(run).show()`` in a real JupyterLab (and Jupyter Notebook 7), in a real
headless Chromium, against a live API, scheduler and Redis with default settings.

The notebook is what a user writes: ``Workspace.from_config()`` (a ``config.json`` naming
``127.0.0.1``, the token in the user's credentials file), ``start_logging()``, the widget.
The test then logs to that run from outside the notebook and expects the page to show each
value as it comes (playwright's auto-waiting ``expect``), then the run's end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright.sync_api import Browser, Page, expect

from runyard.config import save_token, write_config_file
from runyard.core import Experiment, Run, Workspace
from tests.support.runs import write
from tests.support.services import ADMIN_TOKEN, Stack, free_port, stop_process, unique, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "widget"
NOTEBOOK = "widget.ipynb"
WAIT = 60_000  # ms: the first cell starts a kernel, the first widget loads its front end


@dataclass
class JupyterServer:
    app: str  # "lab" or "notebook"
    port: int
    token: str
    root: Path

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}/{path}?token={self.token}"


def _quiet_config(folder: Path) -> Path:
    """No news, no update check, no extension manager going to PyPI, no language servers
    looked for, no terminals: JupyterLab starts at once and asks nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_lsp": False, "jupyter_server_terminals": False},
            "terminals_enabled": False,
        },
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
            "extension_manager": "readonly",
        },
    }
    (folder / "jupyter_server_config.json").write_text(json.dumps(settings))
    labconfig = folder / "labconfig"
    labconfig.mkdir(exist_ok=True)
    disabled = {
        "@jupyterlab/apputils-extension:announcements": True,
        "@jupyterlab/lsp-extension": True,
        "@jupyterlab/terminal-extension": True,
        "@jupyter-notebook/terminal-extension": True,  # needs the one above
    }
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    return folder


@contextmanager
def jupyter_server(app: str, home: Path) -> Iterator[JupyterServer]:
    """``jupyter lab`` or ``jupyter notebook`` (7) on a free port with a known token and a
    fresh root folder, its settings, runtime files and kernels' IPython profile kept in
    ``home``; stopped on leaving."""
    server = JupyterServer(app, free_port(), secrets.token_hex(16), home / "notebooks")
    server.root.mkdir(parents=True)
    # Widget state saved with the notebook, so the test can see what a saved file holds.
    widget_settings = home / "settings" / "@jupyter-widgets" / "jupyterlab-manager"
    widget_settings.mkdir(parents=True)
    (widget_settings / "plugin.jupyterlab-settings").write_text('{"saveState": true}')
    # The kernel finds the service as a user's would: no RUNYARD_* variables at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(_quiet_config(home / "config")),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    command = [
        sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
        f"--ServerApp.port={server.port}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={server.root}",
        f"--LabServerApp.workspaces_dir={home / 'workspaces'}",
        f"--LabServerApp.user_settings_dir={home / 'settings'}",
    ]  # fmt: skip
    with open(home / f"jupyter-{app}.log", "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: _answers(server), 60, 0.2, what=f"jupyter {app}")
        yield server
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[JupyterServer]:
    """JupyterLab. It needs ``stack`` so that it stops first: its kernels are the
    service's clients."""
    with jupyter_server("lab", tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[JupyterServer]:
    """Jupyter Notebook 7, as ``jupyterlab`` above."""
    with jupyter_server("notebook", tmp_path_factory.mktemp("notebook7")) as server:
        yield server


def _answers(server: JupyterServer) -> bool:
    try:
        return httpx.get(server.url("127.0.0.1", "api/status"), timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def project_folder(server: JupyterServer, stack: Stack) -> Path:
    """A project folder as ``runyard up`` leaves it: ``config.json`` with the service's URL
    (``127.0.0.1``), the token in the user's credentials file, not in the folder."""
    folder = server.root / unique("project")
    write_config_file(folder / "config.json", stack.url)
    save_token(stack.url, ADMIN_TOKEN)
    return folder


@pytest.fixture
def notebook_folder(jupyterlab: JupyterServer, stack: Stack) -> Path:
    return project_folder(jupyterlab, stack)


def interactive_run(experiment: str) -> str:
    """A cell that starts a run the test then logs to, and shows the widget."""
    return (
        "from runyard.core import Experiment, Workspace\n"
        "from runyard.widgets import RunDetails\n"
        "ws = Workspace.from_config()\n"
        f"run = Experiment(ws, {experiment!r}).start_logging()\n"
        "RunDetails(run).show()\n"
    )


def submitted_run(experiment: str, cluster: str) -> str:
    """A cell that submits ``src/train.py`` to ``cluster`` (on the kernel's own Python), and
    shows the widget."""
    return (
        "import sys\n"
        "from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace\n"
        "from runyard.widgets import RunDetails\n"
        "ws = Workspace.from_config()\n"
        "env = Environment('kernel-python')\n"
        "env.python.user_managed_dependencies = True\n"
        "env.python.interpreter_path = sys.executable\n"
        f"config = ScriptRunConfig('src', 'train.py', compute_target={cluster!r}, "
        "environment=env)\n"
        f"run = Experiment(ws, {experiment!r}).submit(config)\n"
        "RunDetails(run).show()\n"
    )


def write_notebook(folder: Path, *cells: str) -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    path = folder / NOTEBOOK
    nbformat.write(notebook, path)
    return path


# Marks the page once a kernel's websocket has said "idle": the notebook is connected to its
# kernel (JupyterLab's and Notebook 7's indicators read "idle" before that too).
KERNEL_IDLE = """
(() => {
  const Native = window.WebSocket;
  const idle = /"execution_state":\\s*"idle"/;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      if (!String(args[0]).includes("/api/kernels/")) return;
      this.addEventListener("message", (event) => {
        const text = typeof event.data === "string"
          ? event.data : new TextDecoder().decode(event.data);
        if (idle.test(text)) document.documentElement.dataset.kernelIdle = "yes";
      });
    }
  };
})();
"""


def open_and_run(browser: Browser, server: JupyterServer, host: str, notebook: Path) -> Page:
    """Open the notebook on ``host`` and run its cells with Shift+Enter, once its kernel is
    connected (typed before, Shift+Enter moves on without running the cell)."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.add_init_script(KERNEL_IDLE)
    relative = notebook.relative_to(server.root).as_posix()
    if server.app == "lab":
        # ``reset``: a fresh workspace, not the tabs an earlier test left open.
        page.goto(server.url(host, f"lab/tree/{relative}") + "&reset")
    else:  # Notebook 7: one notebook a page
        page.goto(server.url(host, f"notebooks/{relative}"))
    editor = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first
    expect(editor).to_be_visible(timeout=WAIT)
    expect(page.locator("html[data-kernel-idle='yes']")).to_have_count(1, timeout=WAIT)
    editor.click()
    for _ in nbformat.read(notebook, as_version=4).cells:
        page.keyboard.press("Shift+Enter")
    return page


def the_run(page: Page, stack: Stack, experiment: str) -> Run:
    """The notebook's run, as another client (the test) sees it."""
    head = page.locator("[data-run-id]").first
    expect(head).to_be_visible(timeout=WAIT)
    run_id = head.get_attribute("data-run-id")
    assert run_id
    return Run(Experiment(Workspace(url=stack.url), experiment), run_id)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_widget_shows_a_run_live_inline_and_its_end(
    browser: Browser, jupyterlab: JupyterServer, stack: Stack, notebook_folder: Path, host: str
) -> None:
    """With the notebook on ``localhost`` the config still says ``127.0.0.1``: the widget
    reads the run in the kernel, so the page's host does not matter."""
    experiment = unique("widget")
    notebook = write_notebook(notebook_folder, interactive_run(experiment))
    page = open_and_run(browser, jupyterlab, host, notebook)
    run = the_run(page, stack, experiment)

    status = page.get_by_test_id("run-status")
    expect(status).to_have_text("Running", timeout=WAIT)
    expect(page.get_by_test_id("metrics")).to_contain_text("No metrics logged yet")
    link = page.get_by_test_id("studio-link")
    expect(link).to_have_attribute("href", f"{stack.url}/runs/{run.id}")

    run.log("loss", 0.5)
    run.log("accuracy", 0.61)
    run.flush()
    expect(page.get_by_test_id("value-loss")).to_have_text("0.5")
    expect(page.get_by_test_id("value-accuracy")).to_have_text("0.61")
    run.log("loss", 0.25)
    run.flush()
    expect(page.get_by_test_id("value-loss")).to_have_text("0.25")
    chart = page.get_by_test_id("chart-loss")
    expect(chart).to_have_attribute("data-points", "2")
    expect(chart.locator("polyline")).to_have_count(1)
    for step in range(3, 6):
        run.log("loss", 1 / step)
    run.flush()
    expect(chart).to_have_attribute("data-points", "5")
    expect(page.get_by_test_id("value-loss")).to_have_text("0.2")
    expect(status).to_have_text("Running")
    screenshot(page, f"live-{host}")

    run.complete()
    expect(status).to_have_text("Completed")
    screenshot(page, f"completed-{host}")

    unsaved = page.locator(".jp-mod-dirty")  # the tab's mark of unsaved changes
    expect(unsaved).not_to_have_count(0)
    page.keyboard.press("Control+s")
    expect(unsaved).to_have_count(0)
    saved = notebook.read_text()
    widgets = nbformat.reads(saved, as_version=4).metadata["widgets"]
    assert "Completed" in json.dumps(widgets)  # the panel's state is in the file...
    assert ADMIN_TOKEN not in saved  # ...and no token anywhere
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def test_the_widget_works_the_same_in_jupyter_notebook_7(
    browser: Browser, notebook7: JupyterServer, stack: Stack
) -> None:
    experiment = unique("widget-nb7")
    notebook = write_notebook(project_folder(notebook7, stack), interactive_run(experiment))
    page = open_and_run(browser, notebook7, "localhost", notebook)
    run = the_run(page, stack, experiment)
    status = page.get_by_test_id("run-status")
    expect(status).to_have_text("Running", timeout=WAIT)
    for value in (0.9, 0.4):
        run.log("loss", value)
    run.flush()
    expect(page.get_by_test_id("value-loss")).to_have_text("0.4")
    expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-points", "2")
    run.complete()
    expect(status).to_have_text("Completed")
    screenshot(page, "notebook7-completed")
    # Notebook 7.6 itself raises this one while loading settings, on any notebook.
    errors = [e for e in page.errors if "reading 'schema'" not in e]  # type: ignore[attr-defined]
    assert errors == []
    page.context.close()


def test_a_failed_run_shows_why(
    browser: Browser, jupyterlab: JupyterServer, stack: Stack, notebook_folder: Path
) -> None:
    experiment = unique("widget-fail")
    notebook = write_notebook(notebook_folder, interactive_run(experiment))
    page = open_and_run(browser, jupyterlab, "127.0.0.1", notebook)
    run = the_run(page, stack, experiment)
    expect(page.get_by_test_id("run-status")).to_have_text("Running", timeout=WAIT)
    run.log("loss", float("nan"))
    run.fail(error_details="the loss became NaN at step 1")
    expect(page.get_by_test_id("run-status")).to_have_text("Failed")
    expect(page.get_by_test_id("run-reason")).to_have_text("the loss became NaN at step 1")
    screenshot(page, "failed")
    page.context.close()


def test_a_submitted_script_shows_live_on_its_worker_and_fails_with_its_reason(
    browser: Browser,
    jupyterlab: JupyterServer,
    stack: Stack,
    workers: Any,
    notebook_folder: Path,
    tmp_path: Path,
) -> None:
    cluster = unique("widget")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    release = tmp_path / "release"
    script = (
        "import os, time\nfrom runyard.core import Run\nrun = Run.get_context()\n"
        "for step in range(3):\n    run.log('loss', 1 / (step + 1))\nrun.flush()\n"
        f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.05)\n"
        "raise RuntimeError('the loss diverged')\n"
    )
    write(notebook_folder / "src", {"train.py": script})
    experiment = unique("widget-submit")
    # The next cell blocks the kernel until the run ends: the widget updates meanwhile.
    waits = "details = run.wait_for_completion(raise_on_error=False)\nprint(details['status'])"
    notebook = write_notebook(notebook_folder, submitted_run(experiment, cluster), waits)
    page = open_and_run(browser, jupyterlab, "127.0.0.1", notebook)
    status = page.get_by_test_id("run-status")
    try:
        expect(status).to_have_text("Running", timeout=WAIT)
        expect(page.get_by_test_id("value-loss")).to_have_text("0.333333")
        expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-points", "3")
        expect(page.locator(".jp-InputPrompt").nth(1)).to_have_text("[*]:")  # still waiting
    finally:
        release.touch()
    expect(status).to_have_text("Failed", timeout=WAIT)
    expect(page.get_by_test_id("run-reason")).to_contain_text("code 1")
    expect(page.locator(".jp-OutputArea-output").last).to_have_text("Failed")
    screenshot(page, "submitted-failed")
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()
