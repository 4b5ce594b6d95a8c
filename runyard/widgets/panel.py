"""The live panel ``RunDetails.show()`` displays: ipywidgets 8 HTML widgets whose values a
``LiveFeed`` thread in the kernel replaces as the run changes.

ipywidgets ships its front end to JupyterLab and Notebook 7 as a prebuilt extension, so the
panel works in either as installed, with nothing to build, trust or frame. Imported only when
a panel is made: ipywidgets is the optional ``runyard[notebook]`` extra.
"""

from __future__ import annotations

from typing import Any, Optional

import ipywidgets as widgets

from runyard.widgets.feed import LiveFeed
from runyard.widgets.render import STYLE, charts_html, link_html, metrics_html, status_html
from runyard.widgets.view import RunView


class RunPanel(widgets.VBox):
    """Status and reason, the metrics table, one chart per series, the Studio link."""

    def __init__(self, view: RunView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feed: Optional[LiveFeed] = None
        self._status = widgets.HTML(status_html(view))
        self._metrics = widgets.HTML(metrics_html(view))
        self._charts = widgets.HTML(charts_html(view))
        self._link = widgets.HTML(link_html(view))
        self.children = (widgets.HTML(STYLE), self._status, self._metrics, self._charts, self._link)
        self.add_class("runyard-run-details")

    def follow(self, feed: LiveFeed) -> None:
        """Show what ``feed`` reads, from now until the run ends or the panel closes."""
        self.feed = feed
        feed.listen(self.update)

    def update(self, view: RunView) -> None:
        """Called from the feed's thread: each widget sends its new value to the page."""
        for widget, markup in (
            (self._status, status_html(view)),
            (self._metrics, metrics_html(view)),
            (self._charts, charts_html(view)),
        ):
            if widget.value != markup:
                widget.value = markup

    def close(self) -> None:
        """Stop following the run (with the last panel on it, the stream and its thread end
        first), then close."""
        if self.feed is not None and self.feed.unlisten(self.update) == 0:
            self.feed.stop()
        for child in self.children:
            child.close()
        super().close()
