// Line charts on uPlot (canvas, built for long time series). A chart fills its container's
// width and follows it; zooming (drag) asks ``onZoom`` for a finer series of that range.
// Each chart has a log-scale toggle for y and a smoothing slider (a debiased EMA, drawn over
// the faded raw line, as TensorBoard and ClearML do).
//
// The tick labels drawn and each line's last value are also written on the chart's element
// (data-x-ticks, data-y-ticks, data-last): the canvas itself holds no text to read.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { html } from './html.js';
import { ema } from './smoothing.js';
import { INTEGER_INCRS, linearLabels, logLabels } from './ticks.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be185d', '#4d7c0f'];

export function color(i) {
  return COLORS[i % COLORS.length];
}

function faded(hex) {
  return hex + '55';
}

function lastValue(column) {
  for (let i = column.length - 1; i >= 0; i--) if (column[i] !== null && column[i] !== undefined) return column[i];
  return null;
}

// A log axis has a split at every 1…9 × 10^k: grid lines only where a label is.
function labelledOnly(u, splits) {
  const labels = logLabels(splits);
  return splits.map((v, i) => (labels[i] === null ? null : v));
}

// data: [xs, ys1, ys2, ...]; labels: names of the y series; xLabel: the x axis;
// integerX: the x axis counts (steps, run numbers), so its ticks are whole numbers.
export function Chart({ data, labels, xLabel = 'step', height = 220, onZoom, testid, integerX = false }) {
  const box = useRef(null);
  const plot = useRef(null);
  const zoom = useRef(onZoom);
  zoom.current = onZoom;
  const [logY, setLogY] = useState(false);
  const [smoothing, setSmoothing] = useState(0);
  const smoothed = smoothing > 0;

  // What is drawn: on a log scale values at or below zero have no place (gaps); smoothed,
  // each raw line is followed by its moving average.
  const shown = useMemo(() => {
    const ys = data.slice(1).map((column) => (logY ? column.map((v) => (v > 0 ? v : null)) : column));
    return [data[0], ...ys, ...(smoothed ? ys.map((column) => ema(column, smoothing)) : [])];
  }, [data, logY, smoothing]);
  const names = smoothed ? [...labels, ...labels.map((l) => `${l} (smoothed)`)] : labels;

  useEffect(() => {
    const el = box.current;
    const width = Math.max(el.clientWidth, 200);
    const tickLabels = (axis) => (u, splits, axisIdx, space, incr) => {
      const out = axis === 'y' && logY ? logLabels(splits) : linearLabels(splits, incr);
      el.dataset[axis === 'y' ? 'yTicks' : 'xTicks'] = JSON.stringify(out.filter((v) => v !== null));
      return out;
    };
    const line = (label, i) => {
      const raw = i < labels.length;
      const stroke = color(raw ? i : i - labels.length);
      return { label, stroke: smoothed && raw ? faded(stroke) : stroke, width: smoothed && raw ? 1 : 1.5, spanGaps: false };
    };
    const options = {
      width,
      height,
      scales: { x: { time: false }, y: logY ? { distr: 3, log: 10 } : {} },
      axes: [
        { label: xLabel, values: tickLabels('x'), ...(integerX ? { incrs: INTEGER_INCRS } : {}) },
        { values: tickLabels('y'), size: 60, ...(logY ? { grid: { filter: labelledOnly }, ticks: { filter: labelledOnly } } : {}) },
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [{ label: xLabel }, ...names.map(line)],
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
    el.dataset.yScale = logY ? 'log' : 'linear';
    plot.current = new uPlot(options, shown, el);
    const resize = new ResizeObserver(() => {
      const next = Math.max(el.clientWidth, 200);
      if (plot.current && Math.abs(next - plot.current.width) > 2) plot.current.setSize({ width: next, height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [labels.join('\u0000'), xLabel, height, logY, smoothed, integerX]);

  useEffect(() => {
    if (!plot.current) return;
    plot.current.setData(shown);
    const el = box.current;
    el.dataset.points = String(data[0].length);
    el.dataset.series = JSON.stringify(names);
    el.dataset.last = JSON.stringify(shown.slice(1).map(lastValue));
    el.dataset.smoothing = String(smoothing);
  }, [shown]);

  const id = testid || labels.join('-');
  return html`<div class="chart-wrap">
    <div class="chart" ref=${box} data-testid=${testid} role="img" aria-label=${`${labels.join(', ')} by ${xLabel}`}></div>
    <div class="chart-tools">
      <label><input type="checkbox" checked=${logY} onChange=${(e) => setLogY(e.target.checked)}
        aria-label=${`log scale for ${id}`} /> log scale</label>
      <label>smoothing <input type="range" min="0" max="0.99" step="0.01" value=${smoothing}
        aria-label=${`smoothing for ${id}`} onInput=${(e) => setSmoothing(Number(e.target.value))} />
        <output>${smoothing.toFixed(2)}</output></label>
    </div>
  </div>`;
}
