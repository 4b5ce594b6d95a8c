"""A ``RunView`` as HTML (status line, metrics table, SVG charts, Studio link) and as text.

Everything is drawn in the kernel: the charts are inline SVG polylines, so the notebook needs
no JavaScript of Runyard's, no frame and no token. Every name and value a run logged is
escaped: a metric called ``<script>`` is text.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

from runyard.status import RunStatus
from runyard.widgets.view import Metric, Point, RunView

WIDTH, HEIGHT = 320, 160  # one chart, in CSS pixels
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 10, 22, 22

STATUS_COLOURS = {
    RunStatus.COMPLETED.value: "#15803d",
    RunStatus.FAILED.value: "#b91c1c",
    RunStatus.CANCELED.value: "#6b7280",
    RunStatus.RUNNING.value: "#1d4ed8",
}

STYLE = (
    "<style>"
    ".runyard-run{font-family:system-ui,sans-serif;font-size:13px;color:#111827}"
    ".runyard-run table{border-collapse:collapse;margin:4px 0}"
    ".runyard-run th,.runyard-run td{border-bottom:1px solid #e5e7eb;padding:2px 10px;"
    "text-align:left}"
    ".runyard-run td.value{font-variant-numeric:tabular-nums}"
    ".runyard-charts{display:flex;flex-wrap:wrap;gap:8px}"
    ".runyard-charts figure{margin:0;border:1px solid #e5e7eb;border-radius:6px}"
    "</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """Numbers to six significant digits (any magnitude), everything else as it is."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def status_html(view: RunView) -> str:
    colour = STATUS_COLOURS.get(view.status, "#92400e")
    name = view.display_name or view.run_id
    parts = [
        f'<div class="runyard-run runyard-head" data-run-id="{_e(view.run_id)}">'
        f"<b>{_e(name)}</b> "
        f'<span data-testid="run-status" style="color:{colour};font-weight:600">'
        f"{_e(view.status or 'Loading…')}</span>"
    ]
    if view.reason:
        parts.append(f' &mdash; <span data-testid="run-reason">{_e(view.reason)}</span>')
    if view.problem:
        parts.append(
            f'<div data-testid="run-problem" style="color:#b45309">{_e(view.problem)}</div>'
        )
    parts.append("</div>")
    return "".join(parts)


def _shown(metric: Metric) -> str:
    if metric.last is not None:
        return format_value(metric.last)
    if metric.kind == "row":
        return f"{metric.count} rows"
    if metric.kind == "table":
        return f"table ({metric.count} values)"
    if metric.kind == "image":
        return f"{metric.count} image(s)"
    return ""


def metrics_html(view: RunView) -> str:
    if not view.metrics:
        return '<div class="runyard-run" data-testid="metrics">No metrics logged yet.</div>'
    rows = "".join(
        f'<tr data-metric="{_e(m.name)}"><td>{_e(m.name)}</td>'
        f'<td class="value" data-testid="value-{_e(m.name)}">{_e(_shown(m))}</td>'
        f"<td>{m.count}</td></tr>"
        for m in view.metrics
    )
    return (
        '<div class="runyard-run"><table data-testid="metrics">'
        "<thead><tr><th>Metric</th><th>Latest</th><th>Values</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def chart_svg(name: str, points: Sequence[Point]) -> str:
    """One series as a polyline, its y range and step range labelled."""
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" data-testid="chart-{_e(name)}" '
        f'data-points="{len(points)}" role="img" aria-label="{_e(name)}">'
        f'<text x="{PAD_LEFT}" y="15" font-size="12" font-weight="600">{_e(name)}</text>'
    )
    if not points:
        return head + "</svg>"
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x_span = (x1 - x0) or 1.0
    y_span = (y1 - y0) or 1.0

    def at(x: float, y: float) -> str:
        px = PAD_LEFT + (x - x0) / x_span * inner_w
        py = PAD_TOP + inner_h - (y - y0) / y_span * inner_h
        return f"{px:.1f},{py:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    bottom = PAD_TOP + inner_h
    return (
        head + f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#e5e7eb"/>'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{line}"/>'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 9}" font-size="10" text-anchor="end">'
        f"{_e(format_value(y1))}</text>"
        f'<text x="{PAD_LEFT - 4}" y="{bottom}" font-size="10" text-anchor="end">'
        f"{_e(format_value(y0))}</text>"
        f'<text x="{PAD_LEFT}" y="{bottom + 14}" font-size="10">{_e(format_value(x0))}</text>'
        f'<text x="{WIDTH - PAD_RIGHT}" y="{bottom + 14}" font-size="10" text-anchor="end">'
        f"{_e(format_value(x1))}</text></svg>"
    )


def charts_html(view: RunView) -> str:
    figures = "".join(
        f'<figure data-metric="{_e(name)}">{chart_svg(name, view.charts.get(name, ()))}</figure>'
        for name in view.charted
    )
    return f'<div class="runyard-run runyard-charts" data-testid="charts">{figures}</div>'


def link_html(view: RunView) -> str:
    return (
        f'<div class="runyard-run"><a href="{_e(view.url)}" target="_blank" rel="noopener" '
        'data-testid="studio-link" style="color:#1d4ed8;text-decoration:underline">'
        "Open in the Runyard Studio</a></div>"
    )


def page_html(view: RunView, note: str = "") -> str:
    """The whole view at one moment, for a notebook without ipywidgets."""
    extra = f'<div class="runyard-run" data-testid="note">{_e(note)}</div>' if note else ""
    return (
        STYLE + status_html(view) + metrics_html(view) + charts_html(view) + link_html(view) + extra
    )


def as_text(view: RunView) -> str:
    """For a terminal: status (and why), the latest value of each metric, the Studio page."""
    head = f"Run {view.run_id}: {view.status or 'Unknown'}"
    if view.reason:
        head += f" ({view.reason})"
    lines = [head]
    for m in view.metrics:
        many = m.last is not None and m.count > 1
        lines.append(f"  {m.name}: {_shown(m)}" + (f" (last of {m.count})" if many else ""))
    lines.append(f"Watch it live: {view.url}")
    return "\n".join(lines)
