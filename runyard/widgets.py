"""``RunDetails(run).show()``: the Studio's live run page inside a Jupyter notebook, as
``azureml.widgets.RunDetails`` shows Azure's run widget.

The page comes from the Runyard API itself; the browser showing the notebook signs in to
the Studio once (the Studio's session cookie), so the notebook never embeds a token. The
API must allow Jupyter's origin to frame it: ``RUNYARD_STUDIO_FRAME_ANCESTORS="'self'
http://localhost:8888"`` (use the same host name for both, so the cookie is sent).
"""

from __future__ import annotations

import html
from typing import Any


class RunDetails:
    def __init__(self, run_instance: Any) -> None:
        self.run = run_instance

    @property
    def url(self) -> str:
        return self.run.get_portal_url()

    def _repr_html_(self) -> str:
        embed = html.escape(self.url + "?embed=1", quote=True)
        page = html.escape(self.url, quote=True)
        title = html.escape(f"Runyard run {self.run.id}", quote=True)
        return (
            f'<iframe src="{embed}" title="{title}" width="100%" height="760" '
            'style="border:1px solid #e5e7eb;border-radius:8px"></iframe>'
            f'<p><a href="{page}" target="_blank" rel="noopener">Open in the Runyard Studio</a></p>'
        )

    def show(self) -> None:
        """Display the live run view in a notebook; elsewhere (a terminal IPython, a plain
        script) print the run's status, its latest metrics and where to watch it."""
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self._repr_html_()))
        else:
            print(self.text())

    def text(self) -> str:
        """The run as text: status, the last value of each metric, its Studio page."""
        lines = [f"Run {self.run.id}: {self.run.get_status()}"]
        for name, value in sorted(self.run.get_metrics().items()):
            if isinstance(value, dict):
                rows = len(next(iter(value.values()), []))
                shown = f"table of {', '.join(value)} ({rows} rows)"
            elif isinstance(value, list):
                shown = f"{value[-1]!r} (last of {len(value)})" if value else "[]"
            else:
                shown = repr(value)
            lines.append(f"  {name}: {shown}")
        lines.append(f"Watch it live: {self.url}")
        return "\n".join(lines)

    def get_widget_data(self) -> dict[str, Any]:
        return {"run_id": self.run.id, "url": self.url}


def _in_notebook() -> bool:
    """A Jupyter kernel (which renders HTML), not a terminal IPython or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
