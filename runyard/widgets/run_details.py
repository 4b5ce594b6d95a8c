"""``RunDetails(run).show()``: a run's status, metrics and charts inside a notebook, updating
live while it runs, as ``azureml.widgets.RunDetails`` shows Azure's.

In a Jupyter kernel with ipywidgets (``pip install 'runyard[notebook]'``) ``show()``
displays a ``RunPanel`` that a thread in the kernel keeps current from the run's live
stream, using the workspace's own client settings. The browser never calls Runyard: no frame
permission, no cookie, no token in the page or in the saved notebook, and the notebook's
host name (``localhost`` or ``127.0.0.1``) does not matter. Without ipywidgets it shows the
run as it is now; outside a notebook it prints it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from runyard.widgets import view as v
from runyard.widgets.render import as_text, page_html
from runyard.widgets.view import RunView

NO_IPYWIDGETS = (
    "This view does not update: for live updates install the notebook extra "
    "(pip install 'runyard[notebook]') and restart the kernel."
)


class RunDetails:
    def __init__(self, run_instance: Any) -> None:
        self.run = run_instance
        self.widget: Any = None  # the RunPanel once shown live

    @property
    def url(self) -> str:
        return self.run.get_portal_url()

    @property
    def _client(self) -> Any:
        return self.run.experiment.workspace.client

    def show(self) -> None:
        """Display the live run in a notebook; elsewhere (a terminal IPython, a plain script)
        print the run's status, its latest metrics and where to watch it."""
        if not _in_notebook():
            print(self.text())
            return
        from IPython.display import HTML, display

        try:
            from runyard.widgets.feed import shared_feed
            from runyard.widgets.panel import RunPanel
        except ImportError:
            display(HTML(page_html(self.read(), note=NO_IPYWIDGETS)))
            return
        self.close()
        start = self._blank()
        panel = RunPanel(start)
        client = self._client
        display(panel)
        panel.follow(shared_feed(client.base_url, client.headers, start))
        self.widget = panel

    def close(self) -> None:
        """Stop following the run and remove the panel (``show()`` again to restart)."""
        if self.widget is not None:
            self.widget.close()
            self.widget = None

    def read(self) -> RunView:
        """The run as it is now: status and reason, each series' latest value and chart."""
        client = self._client
        return v.read_blocking(
            v.reads(self._blank()), lambda read: client.json("GET", read.path, params=read.params)
        )

    def text(self) -> str:
        """The run as text: status (and why), the last value of each metric, its Studio page."""
        return as_text(self.read())

    def get_widget_data(self, widget_settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """What the widget shows, as a dict: the live panel's latest view once shown."""
        feed = getattr(self.widget, "feed", None)
        view = feed.view if feed is not None else self.read()
        return view.summary()

    def _repr_html_(self) -> str:
        return page_html(self.read())

    def _blank(self) -> RunView:
        return RunView(run_id=self.run.id, url=self.url)


def _in_notebook() -> bool:
    """A Jupyter kernel (which renders HTML), not a terminal IPython or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
