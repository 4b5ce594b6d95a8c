// Several runs side by side: one series overlaid, one final value against another across
// the runs (a sweep's mse against its alpha), and a table of every final value.
// Never an empty first view: with no runs named it takes the latest runs of the newest
// run's experiment, and with no metric named the first one logged as a series.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Chart } from '../chart.js';
import { html } from '../html.js';
import { RunLink } from '../runlink.js';
import { formatValue, navigate } from '../util.js';

const enc = encodeURIComponent;
const LATEST = 5; // runs chosen when none are named

function choose(key, value) {
  const next = new URLSearchParams(location.search);
  next.set(key, value);
  return `/compare?${next.toString()}`;
}

export function Compare() {
  const query = new URLSearchParams(location.search);
  const ids = (query.get('runs') || '').split(',').filter(Boolean);
  const [finals, setFinals] = useState(null); // {run: {name: last value}}
  const [lengths, setLengths] = useState({}); // {name: longest series of it among the runs}
  const [runs, setRuns] = useState({}); // {id: run record}
  const [series, setSeries] = useState({}); // {run: [[idx, value], ...]} of the chosen metric
  const [error, setError] = useState('');
  const [nothing, setNothing] = useState(false);
  const metric = query.get('metric') || '';
  const xMetric = query.get('x') || '';

  useEffect(() => {
    if (ids.length) return;
    (async () => {
      const newest = (await api('/runs', { params: { top_level: true, limit: 1 } })).data[0];
      if (!newest) return setNothing(true);
      const params = { top_level: true, limit: LATEST, experiment: newest.experiment };
      const latest = (await api('/runs', { params })).data;
      const next = new URLSearchParams(location.search);
      next.set('runs', latest.map((r) => r.id).join(','));
      navigate(`/compare?${next.toString()}`, { replace: true });
    })().catch((err) => setError(err.message));
  }, [ids.join(',')]);

  useEffect(() => {
    if (!ids.length) return;
    setFinals(null);
    Promise.all(ids.map((id) => Promise.all([api(`/runs/${enc(id)}/metric-names`), api(`/runs/${enc(id)}`)])))
      .then((results) => {
        const last = {};
        const longest = {};
        const records = {};
        results.forEach(([names, run], i) => {
          records[ids[i]] = run;
          last[ids[i]] = {};
          for (const m of names.data) {
            if (!('last' in m)) continue;
            last[ids[i]][m.name] = m.last;
            longest[m.name] = Math.max(longest[m.name] || 0, m.count);
          }
        });
        setRuns(records);
        setLengths(longest);
        setFinals(last);
      })
      .catch((err) => setError(err.message));
  }, [ids.join(',')]);

  const names = useMemo(
    () => [...new Set(Object.values(finals || {}).flatMap((m) => Object.keys(m)))].sort(),
    [finals],
  );

  // No metric named: the first one logged as a series (else the first at all).
  useEffect(() => {
    if (!finals || metric || !names.length) return;
    const first = names.find((n) => lengths[n] > 1) || names[0];
    navigate(choose('metric', first), { replace: true });
  }, [finals, metric]);

  useEffect(() => {
    if (!metric || !ids.length) return;
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

  const set = (key, value) => navigate(choose(key, value));

  if (error) return html`<main><h1>Compare</h1><p class="error" role="alert">${error}</p></main>`;
  if (nothing) return html`<main><h1>Compare</h1><p>No runs yet: submit one, then compare runs here.</p></main>`;
  if (!ids.length || !finals) return html`<main><h1>Compare</h1><p>Loading…</p></main>`;
  const label = (id) => (runs[id] && runs[id].display_name) || id;

  return html`<main>
    <h1>Compare ${ids.length} run(s)</h1>
    <div class="toolbar">
      <label>Metric <select value=${metric} onChange=${(e) => set('metric', e.target.value)}>
        <option value="">choose…</option>${names.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
      <label>Against <select value=${xMetric} onChange=${(e) => set('x', e.target.value)}>
        <option value="">step (overlay)</option>${names.map((n) => html`<option value=${n}>${n} (final values)</option>`)}</select></label>
    </div>
    ${!names.length && html`<p class="hint">These runs have logged no metrics yet.</p>`}
    ${metric && !xMetric && html`<${Overlay} ids=${ids} series=${series} metric=${metric} label=${label} />`}
    ${metric && xMetric && html`<${Against} ids=${ids} finals=${finals} metric=${metric} xMetric=${xMetric} />`}
    <h2>Final values</h2>
    <div class="scroll"><table data-testid="finals"><thead><tr><th>Run</th>${names.map((n) => html`<th class="num">${n}</th>`)}</tr></thead>
      <tbody>${ids.map((id) => html`<tr key=${id} data-run=${id}><td><${RunLink} run=${runs[id] || { id }} /></td>
        ${names.map((n) => html`<td class="num">${formatValue(finals[id][n])}</td>`)}</tr>`)}</tbody></table></div>
  </main>`;
}

function Overlay({ ids, series, metric, label }) {
  const present = ids.filter((id) => series[id] && series[id].length);
  if (!present.length) return html`<p class="hint">No run has ${metric} as a series.</p>`;
  // uPlot shares one x array: align every run's points on the union of their steps.
  const xs = [...new Set(present.flatMap((id) => series[id].map((p) => p[0])))].sort((a, b) => a - b);
  const columns = present.map((id) => {
    const byStep = new Map(series[id].map((p) => [p[0], p[1]]));
    return xs.map((x) => (byStep.has(x) ? byStep.get(x) : null));
  });
  return html`<figure class="card wide"><figcaption>${metric} by step</figcaption>
    <${Chart} data=${[xs, ...columns]} labels=${present.map(label)} xLabel="step" integerX=${true}
      testid="compare-chart" /></figure>`;
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
