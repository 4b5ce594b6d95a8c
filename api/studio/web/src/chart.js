// Line charts on uPlot (canvas, built for long time series). A chart fills its container's
// width and follows it; zooming (drag) asks ``onZoom`` for a finer series of that range.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { html } from './html.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be185d', '#4d7c0f'];

export function color(i) {
  return COLORS[i % COLORS.length];
}

// data: [xs, ys1, ys2, ...]; labels: names of the y series; xLabel: the x axis.
export function Chart({ data, labels, xLabel = 'step', height = 220, onZoom, testid }) {
  const box = useRef(null);
  const plot = useRef(null);
  const zoom = useRef(onZoom);
  zoom.current = onZoom;

  useEffect(() => {
    const width = Math.max(box.current.clientWidth, 200);
    const options = {
      width,
      height,
      scales: { x: { time: false } },
      axes: [{ label: xLabel }, {}],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [{ label: xLabel }, ...labels.map((label, i) => ({ label, stroke: color(i), width: 1.5, spanGaps: false }))],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 2 || !zoom.current) return;
            const min = u.posToVal(u.select.left, 'x');
            const max = u.posToVal(u.select.left + u.select.width, 'x');
            zoom.current(min, max);
          },
        ],
      },
    };
    plot.current = new uPlot(options, data, box.current);
    box.current.dataset.points = String(data[0].length);
    const resize = new ResizeObserver(() => {
      const next = Math.max(box.current.clientWidth, 200);
      if (plot.current && Math.abs(next - plot.current.width) > 2) plot.current.setSize({ width: next, height });
    });
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [labels.join('\u0000'), xLabel, height]);

  useEffect(() => {
    if (!plot.current) return;
    plot.current.setData(data);
    box.current.dataset.points = String(data[0].length);
  }, [data]);

  return html`<div class="chart" ref=${box} data-testid=${testid} role="img"
    aria-label=${`${labels.join(', ')} by ${xLabel}`}></div>`;
}
