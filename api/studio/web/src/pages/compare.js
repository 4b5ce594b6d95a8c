// Several runs side by side: one series overlaid, one final value against another across
// the runs (a sweep's mse against its alpha), and a table of every final value.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Chart } from '../chart.js';
import { html } from '../html.js';
import { follow, formatValue, navigate } from '../util.js';

const enc = encodeURIComponent;

export function Compare() {
  const query = new URLSearchParams(location.search);
  const ids = (query.get('runs') || '').split(',').filter(Boolean);
  const [finals, setFinals] = useState(null); // {run: {name: last value}}
  const [series, setSeries] = useState({}); // {run: [[idx, value], ...]} of the chosen metric
  const [error, setError] = useState('');
  const metric = query.get('metric') || '';
  const xMetric = query.get('x') || '';

  useEffect(() => {
    Promise.all(ids.map((id) => api(`/runs/${enc(id)}/metric-names`)))
      .then((results) => {
        const last = {};
        results.forEach((r, i) => {
          last[ids[i]] = {};
          for (const m of r.data) if ('last' in m) last[ids[i]][m.name] = m.last;
        });
        setFinals(last);
      })
      .catch((err) => setError(err.message));
  }, [ids.join(',')]);

  useEffect(() => {
    if (!metric) return;
    Promise.all(
      ids.map((id) => api(`/runs/${enc(id)}/metrics/${enc(metric)}/history`, { params: { max_points: 1000 } }).catch(() => null)),
    ).then((results) => {
      const found = {};
      results.forEach((r, i) => {
        if (r) found[ids[i]] = r.points.filter((p) => typeof p[1] === 'number');
      });
      setSeries(found);
    });
  }, [ids.join(','), metric]);

  const names = useMemo(
    () => [...new Set(Object.values(finals || {}).flatMap((m) => Object.keys(m)))].sort(),
    [finals],
  );
  const set = (key, value) => {
    const next = new URLSearchParams(location.search);
    next.set(key, value);
    navigate(`/compare?${next.toString()}`);
  };

  if (!ids.length) return html`<main><h1>Compare</h1><p>Select runs on an experiment's page, then Compare.</p></main>`;
  if (error) return html`<main><h1>Compare</h1><p class="error" role="alert">${error}</p></main>`;
  if (!finals) return html`<main><h1>Compare</h1><p>Loading…</p></main>`;

  return html`<main>
    <h1>Compare ${ids.length} run(s)</h1>
    <div class="toolbar">
      <label>Metric <select value=${metric} onChange=${(e) => set('metric', e.target.value)}>
        <option value="">choose…</option>${names.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
      <label>Against <select value=${xMetric} onChange=${(e) => set('x', e.target.value)}>
        <option value="">step (overlay)</option>${names.map((n) => html`<option value=${n}>${n} (final values)</option>`)}</select></label>
    </div>
    ${metric && !xMetric && html`<${Overlay} ids=${ids} series=${series} metric=${metric} />`}
    ${metric && xMetric && html`<${Against} ids=${ids} finals=${finals} metric=${metric} xMetric=${xMetric} />`}
    <h2>Final values</h2>
    <div class="scroll"><table data-testid="finals"><thead><tr><th>Run</th>${names.map((n) => html`<th>${n}</th>`)}</tr></thead>
      <tbody>${ids.map((id) => html`<tr key=${id}><td><a href=${`/runs/${enc(id)}`} onClick=${follow}>${id}</a></td>
        ${names.map((n) => html`<td class="num">${formatValue(finals[id][n])}</td>`)}</tr>`)}</tbody></table></div>
  </main>`;
}

function Overlay({ ids, series, metric }) {
  const present = ids.filter((id) => series[id] && series[id].length);
  if (!present.length) return html`<p class="hint">No run has ${metric} as a series.</p>`;
  // uPlot shares one x array: align every run's points on the union of their steps.
  const xs = [...new Set(present.flatMap((id) => series[id].map((p) => p[0])))].sort((a, b) => a - b);
  const columns = present.map((id) => {
    const byStep = new Map(series[id].map((p) => [p[0], p[1]]));
    return xs.map((x) => (byStep.has(x) ? byStep.get(x) : null));
  });
  return html`<figure class="card wide"><figcaption>${metric} by step</figcaption>
    <${Chart} data=${[xs, ...columns]} labels=${present} xLabel="step" testid="compare-chart" /></figure>`;
}

function Against({ ids, finals, metric, xMetric }) {
  const pairs = ids
    .map((id) => [finals[id][xMetric], finals[id][metric]])
    .filter(([x, y]) => typeof x === 'number' && typeof y === 'number')
    .sort((a, b) => a[0] - b[0]);
  if (!pairs.length) return html`<p class="hint">No run has both ${metric} and ${xMetric}.</p>`;
  return html`<figure class="card wide"><figcaption>${metric} against ${xMetric} (final values, one point per run)</figcaption>
    <${Chart} data=${[pairs.map((p) => p[0]), pairs.map((p) => p[1])]} labels=${[metric]} xLabel=${xMetric}
      testid="compare-chart" /></figure>`;
}
