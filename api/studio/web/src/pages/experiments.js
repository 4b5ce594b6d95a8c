// Experiments, and one experiment's runs: status, cluster, duration, tags and the latest
// value of chosen series; filter by status, tag and cluster (the API filters the whole
// experiment, and the pager walks what matches); sort the page shown by any column; and a
// chart of one chosen metric across the runs shown (its latest value per run, by run number
// in submission order, as Azure ML's experiment charts draw it).
import { useEffect, useMemo, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Chart } from '../chart.js';
import { html } from '../html.js';
import { Pager, usePager } from '../pager.js';
import { RunLink } from '../runlink.js';
import { duration, follow, formatValue, navigate, runDuration, when } from '../util.js';

const PAGE = 100; // rows per page of a table

export function Experiments() {
  const [experiments, setExperiments] = useState(null);
  const [error, setError] = useState('');
  const pager = usePager();
  useEffect(() => {
    api('/experiments', { params: { limit: PAGE, cursor: pager.cursor } })
      .then((r) => setExperiments(r))
      .catch((err) => setError(err.message));
  }, [pager.cursor]);
  return html`<main>
    <h1>Experiments</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!experiments ? html`<p>Loading…</p>` : html`<table>
      <thead><tr><th>Experiment</th><th>Runs</th><th>Created</th></tr></thead>
      <tbody>${experiments.data.map((e) => html`<tr key=${e.name}>
        <td><a href=${`/experiments/${encodeURIComponent(e.name)}`} onClick=${follow}>${e.name}</a></td>
        <td>${e.run_count}</td><td>${when(e.created_at)}</td></tr>`)}</tbody></table>
      <${Pager} page=${pager.page} size=${PAGE} rows=${experiments.data.length} count=${experiments.count}
        nextCursor=${experiments.next_cursor} onTurn=${pager.onTurn} label="experiments" testid="experiments-pager" />`}
  </main>`;
}

const BASE_COLUMNS = [
  ['id', 'Run', (r) => r.display_name || r.id],
  ['status', 'Status', (r) => r.status],
  ['cluster', 'Cluster', (r) => r.cluster || ''],
  ['duration', 'Duration', (r) => runDuration(r) ?? -1],
  ['submitted_by', 'Submitter', (r) => r.submitted_by || ''],
  ['created_at', 'Submitted', (r) => r.created_at],
  ['tags', 'Tags', (r) => Object.entries(r.tags).map(([k, v]) => (v ? `${k}=${v}` : k)).join(' ')],
];

const STATUSES = ['NotStarted', 'Queued', 'Preparing', 'Starting', 'Running', 'Finalizing',
  'CancelRequested', 'NotResponding', 'Completed', 'Failed', 'Canceled'];

// The API's query for the table's filters: a status, a cluster, a tag ("key" or "key=value").
export function filterParams(filters) {
  const params = {};
  if (filters.status) params.status = filters.status;
  if (filters.cluster) params.cluster = filters.cluster;
  const tag = filters.tag.trim();
  if (tag) {
    const at = tag.indexOf('=');
    params.tags = JSON.stringify(at < 0 ? { [tag]: null } : { [tag.slice(0, at)]: tag.slice(at + 1) });
  }
  return params;
}

export function Experiment({ name }) {
  const [runs, setRuns] = useState(null);
  const [names, setNames] = useState([]);
  const [chosen, setChosen] = useState(null);
  const [charted, setCharted] = useState(null); // the metric drawn across runs
  const [error, setError] = useState('');
  const [filters, setFilters] = useState({ status: '', tag: '', cluster: '' });
  const [sort, setSort] = useState({ key: 'created_at', descending: true });
  const [selected, setSelected] = useState(new Set());
  const [page, setPage] = useState({ count: null, next_cursor: null });
  const pager = usePager();

  const query = filterParams(filters);
  const queryKey = JSON.stringify(query);
  useEffect(() => pager.reset(), [name, queryKey]);

  useEffect(() => {
    let alive = true;
    async function load() {
      try {
        const wanted = [...new Set([...(chosen || []), ...(charted ? [charted] : [])])];
        const params = { ...query, limit: PAGE, cursor: pager.cursor, metric: wanted };
        const result = await api(`/experiments/${encodeURIComponent(name)}/runs`, { params });
        if (!alive) return;
        setRuns(result.data);
        setPage({ count: result.count, next_cursor: result.next_cursor });
        setNames(result.metric_names);
        if (chosen === null) setChosen(result.metric_names.slice(0, 3));
        if (charted === null && result.metric_names.length) setCharted(result.metric_names[0]);
      } catch (err) {
        if (alive) setError(err.message);
      }
    }
    load();
    const timer = setInterval(load, 3000);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [name, (chosen || []).join('\u0000'), charted, pager.cursor, queryKey]);

  const columns = useMemo(
    () => [...BASE_COLUMNS, ...(chosen || []).map((m) => [`m:${m}`, m, (r) => r.metrics[m] ?? null])],
    [chosen],
  );
  const shown = useMemo(() => {
    if (!runs) return [];
    const rows = [...runs]; // filtered by the API already
    const column = columns.find(([key]) => key === sort.key) || columns[0];
    const value = column[2];
    rows.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return sort.descending ? -order : order;
    });
    return rows;
  }, [runs, sort, columns]);

  if (error) return html`<main><h1>${name}</h1><p class="error" role="alert">${error}</p></main>`;
  if (!runs) return html`<main><h1>${name}</h1><p>Loading…</p></main>`;
  const statuses = STATUSES;
  const clusters = [...new Set([...runs.map((r) => r.cluster), filters.cluster].filter(Boolean))].sort();
  const toggle = (id) => {
    const next = new Set(selected);
    next.has(id) ? next.delete(id) : next.add(id);
    setSelected(next);
  };
  const sortBy = (key) => setSort((s) => ({ key, descending: s.key === key ? !s.descending : false }));
  const compare = () => navigate(`/compare?runs=${[...selected].map(encodeURIComponent).join(',')}`);

  return html`<main>
    <h1>Experiment ${name}</h1>
    <div class="toolbar" role="group" aria-label="filters">
      <label>Status <select value=${filters.status} onChange=${(e) => setFilters({ ...filters, status: e.target.value })}>
        <option value="">any</option>${statuses.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>Cluster <select value=${filters.cluster} onChange=${(e) => setFilters({ ...filters, cluster: e.target.value })}>
        <option value="">any</option>${clusters.map((c) => html`<option value=${c}>${c}</option>`)}</select></label>
      <label>Tag <input value=${filters.tag} placeholder="key or key=value"
        onInput=${(e) => setFilters({ ...filters, tag: e.target.value })} /></label>
      <label>Metrics <select multiple size="3" onChange=${(e) => setChosen([...e.target.selectedOptions].map((o) => o.value))}>
        ${names.map((m) => html`<option value=${m} selected=${(chosen || []).includes(m)}>${m}</option>`)}</select></label>
      <button disabled=${selected.size < 1} onClick=${compare}>Compare selected (${selected.size})</button>
    </div>
    <table data-testid="runs">
      <thead><tr><th><span class="sr">Select</span></th>${columns.map(([key, label]) => html`<th
          aria-sort=${sort.key === key ? (sort.descending ? 'descending' : 'ascending') : 'none'}>
          <button class="sort" onClick=${() => sortBy(key)}>${label}${sort.key === key ? (sort.descending ? ' ▼' : ' ▲') : ''}</button></th>`)}</tr></thead>
      <tbody>${shown.map((r) => html`<tr key=${r.id}>
        <td><input type="checkbox" aria-label=${`select ${r.id}`} checked=${selected.has(r.id)} onChange=${() => toggle(r.id)} /></td>
        <td><${RunLink} run=${r} /></td>
        <td><span class=${`status s-${r.status}`}>${r.status}</span></td><td>${r.cluster || '–'}</td>
        <td>${duration(runDuration(r))}</td><td>${r.submitted_by || '–'}</td><td>${when(r.created_at)}</td>
        <td>${Object.entries(r.tags).map(([k, v]) => html`<span class="tag">${v ? `${k}=${v}` : k}</span>`)}</td>
        ${(chosen || []).map((m) => html`<td class="num">${formatValue(r.metrics[m])}</td>`)}</tr>`)}</tbody></table>
    <${Pager} page=${pager.page} size=${PAGE} rows=${runs.length} count=${page.count} nextCursor=${page.next_cursor}
      onTurn=${pager.onTurn} label=${`${name}'s runs`} testid="runs-pager" />
    <p class="hint">${shown.length} of ${runs.length} run(s) on this page shown.</p>
    ${names.length > 0 && html`<${AcrossRuns} runs=${shown} all=${runs} names=${names} metric=${charted} onChoose=${setCharted} />`}
  </main>`;
}

// One metric across the runs: the latest value of each, the runs numbered 1, 2, … in the
// order they were submitted (the table's filters apply).
function AcrossRuns({ runs, all, names, metric, onChoose }) {
  const newestFirst = new Map(all.map((r, i) => [r.id, i])); // the API's order
  const ordered = [...runs].sort((a, b) => newestFirst.get(b.id) - newestFirst.get(a.id));
  const points = ordered
    .map((r, i) => [i + 1, r.metrics[metric], r])
    .filter(([, value]) => typeof value === 'number');
  return html`<section aria-labelledby="across-h"><h2 id="across-h">Across runs</h2>
    <div class="toolbar"><label>Chart metric <select value=${metric || ''} onChange=${(e) => onChoose(e.target.value)}>
      ${names.map((m) => html`<option value=${m}>${m}</option>`)}</select></label></div>
    ${points.length === 0
      ? html`<p class="hint">No run shown has a numeric ${metric} yet.</p>`
      : html`<figure class="card wide" data-testid="across-runs"><figcaption>${metric} <span class="hint">latest value of each of ${points.length} run(s), by run number (1 = submitted first)</span></figcaption>
        <${Chart} data=${[points.map((p) => p[0]), points.map((p) => p[1])]} labels=${[metric]} xLabel="run #"
          integerX=${true} testid="across-chart" />
        <p class="hint">${points.map(([n, , r]) => html`<span class="tag" title=${r.id}>${n}: ${r.display_name || r.id}</span>`)}</p></figure>`}
  </section>`;
}
