// One run: what went wrong first (a failure's reason and traceback, or why it has not
// started), then status timeline, properties, tags, charts, images, files, the live log
// tail, child runs and Cancel. While it runs, Server-Sent Events keep everything current.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Chart } from '../chart.js';
import { html } from '../html.js';
import { Pager, usePager } from '../pager.js';
import { RunLink } from '../runlink.js';
import {
  TERMINAL,
  bytes,
  duration,
  failureTail,
  follow,
  formatValue,
  runDuration,
  stateOrder,
  timeline,
  when,
} from '../util.js';

const MAX_POINTS = 1200; // per chart: ~2 per pixel of a wide chart, extremes kept per bucket
const LOG_LIMIT = 400_000;
const TABLE_ROWS = 100; // rows of a logged row/table shown before "N more rows"
const CHILD_PAGE = 100; // child runs per page
const enc = encodeURIComponent;

export function RunPage({ id, me }) {
  const [run, setRun] = useState(null);
  const [error, setError] = useState('');
  const [metrics, setMetrics] = useState([]);
  const [tags, setTags] = useState({});
  const [properties, setProperties] = useState({});
  const [files, setFiles] = useState([]);
  const [children, setChildren] = useState({ data: [], count: null, next_cursor: null });
  const childPager = usePager();
  const childCursor = useRef(undefined); // the page of children shown, for reloads from events
  childCursor.current = childPager.cursor;
  const [log, setLog] = useState('');
  const [versions, setVersions] = useState({}); // metric name -> bump to refetch its series
  const pending = useRef({ names: new Set(), details: false, timer: null });
  const known = useRef(new Set()); // series the page already shows

  // The live stream announces a state a moment before the record shows it: a record read
  // in that moment must not take the page back to the state before.
  async function loadRun() {
    try {
      const fresh = await api(`/runs/${enc(id)}`);
      setRun((shown) =>
        shown && shown.id === fresh.id && stateOrder(shown.status) > stateOrder(fresh.status)
          ? { ...fresh, status: shown.status }
          : fresh,
      );
      return fresh;
    } catch (err) {
      setError(err.message);
      return null;
    }
  }

  // A worker announces the end live a moment before the record says so: read the record
  // again until it agrees.
  async function settle() {
    for (let i = 0; i < 60; i++) {
      const fresh = await loadRun();
      if (!fresh || TERMINAL.has(fresh.status)) return;
      await new Promise((done) => setTimeout(done, 500));
    }
  }
  async function loadChildren() {
    setChildren(await api('/runs', { params: { parent: id, limit: CHILD_PAGE, cursor: childCursor.current } }));
  }
  async function loadDetails() {
    const [names, tagMap, props, fileList] = await Promise.all([
      api(`/runs/${enc(id)}/metric-names`),
      api(`/runs/${enc(id)}/tags`),
      api(`/runs/${enc(id)}/properties`),
      api(`/runs/${enc(id)}/files`),
      loadChildren(),
    ]);
    setMetrics(names.data);
    known.current = new Set(names.data.map((m) => m.name));
    setTags(tagMap);
    setProperties(props);
    setFiles(fileList.data);
  }

  // Another page of children: read only that list again.
  const firstChildPage = useRef(true);
  useEffect(() => {
    if (firstChildPage.current) {
      firstChildPage.current = false;
      return;
    }
    loadChildren().catch((err) => setError(err.message));
  }, [childPager.cursor]);
  useEffect(() => childPager.reset(), [id]);

  // Many events in a burst become one refetch per series touched; the run's other lists
  // are read again only when something besides known series changed.
  function touched(names, details) {
    const waiting = pending.current;
    for (const name of names) waiting.names.add(name);
    waiting.details = waiting.details || details || names.some((n) => !known.current.has(n));
    if (waiting.timer) return;
    waiting.timer = setTimeout(() => {
      const bumped = [...waiting.names];
      const reload = waiting.details;
      waiting.names.clear();
      waiting.details = false;
      waiting.timer = null;
      setVersions((v) => Object.fromEntries([...Object.entries(v), ...bumped.map((n) => [n, (v[n] || 0) + 1])]));
      if (reload) {
        loadDetails().catch(() => {});
        loadRun(); // a new display name
      }
    }, 400);
  }

  useEffect(() => {
    setRun(null);
    setLog('');
    loadRun();
    loadDetails().catch((err) => setError(err.message));
    const source = new EventSource(`/api/v1/runs/${enc(id)}/events?history=true&values=false`);
    source.addEventListener('log', (e) => {
      const text = JSON.parse(e.data).text;
      setLog((old) => (old + text).slice(-LOG_LIMIT));
    });
    let ended = false;
    source.addEventListener('status', (e) => {
      const status = JSON.parse(e.data).status;
      setRun((old) => (old ? { ...old, status } : old));
      ended = TERMINAL.has(status);
      if (ended) {
        settle();
        touched(['*'], true);
      } else {
        loadRun();
      }
    });
    // The stream closes after a finished run's log: do not let the browser reconnect.
    source.addEventListener('error', () => {
      if (ended) source.close();
    });
    source.addEventListener('metrics', (e) => {
      const batch = JSON.parse(e.data);
      if (batch.run_id === id) touched(batch.names, batch.other);
    });
    return () => {
      source.close();
      clearTimeout(pending.current.timer);
      pending.current.timer = null;
    };
  }, [id]);

  if (error && !run) return html`<main><h1>Run ${id}</h1><p class="error" role="alert">${error}</p></main>`;
  if (!run) return html`<main><h1>Run ${id}</h1><p>Loading…</p></main>`;
  const active = !TERMINAL.has(run.status);
  const canAct = me && (me.role === 'admin' || me.role === 'member');
  const cancel = async () => {
    if (!confirm(`Cancel run ${run.id}?`)) return;
    try {
      setRun(await api(`/runs/${enc(run.id)}/cancel`, { method: 'POST' }));
    } catch (err) {
      setError(err.message);
    }
  };
  const images = metrics.filter((m) => m.kind === 'image');
  const charts = metrics.filter((m) => m.kind !== 'image');

  return html`<main class="run">
    <header class="run-head">
      <h1 class="run-title" title=${run.id}>${run.display_name || run.id}</h1>
      <span class=${`status s-${run.status}`} data-testid="run-status">${run.status}</span>
      ${active && canAct && html`<button class="danger" onClick=${cancel}>Cancel</button>`}
    </header>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <${Verdict} run=${run} log=${log} />
    <dl class="facts">
      <dt>Run</dt><dd class="run-id" title=${run.id} data-testid="run-id">${run.id}</dd>
      ${run.display_name && html`<dt>Name</dt><dd>${run.display_name}</dd>`}
      <dt>Experiment</dt><dd><a href=${`/experiments/${enc(run.experiment)}`} onClick=${follow}>${run.experiment}</a></dd>
      <dt>Cluster</dt><dd>${run.cluster || 'interactive'}</dd>
      <dt>Submitter</dt><dd>${run.submitted_by || '–'}</dd>
      ${run.team && html`<dt>Team</dt><dd data-testid="team">${run.team}</dd>`}
      ${(run.preemptions > 0 || run.preempt_requested_at) && html`<dt>Preempted</dt><dd data-testid="preempted">${
        run.preempt_requested_at ? 'stopping now' : `${run.preemptions} time(s)`} for run ${run.preempted_by
        ? html`<a href=${`/runs/${enc(run.preempted_by)}`} onClick=${follow}>${run.preempted_by}</a>` : '–'}: ${run.preemption_reason || 'no reason recorded'}</dd>`}
      <dt>Script</dt><dd>${run.build_only ? 'none: an environment build' : run.script || '–'} ${(run.arguments || []).join(' ')}</dd>
      <dt>Node</dt><dd>${run.worker_id || '–'}</dd>
      <dt>Duration</dt><dd>${duration(runDuration(run))}</dd>
      ${run.parent_run_id && html`<dt>Parent</dt><dd><a href=${`/runs/${enc(run.parent_run_id)}`} onClick=${follow}>${run.parent_run_id}</a></dd>`}
      ${run.snapshot_digest && html`<dt>Snapshot</dt><dd><a href=${`/api/v1/runs/${enc(run.id)}/snapshot`} download>download</a></dd>`}
    </dl>
    <${Timeline} run=${run} />
    <${EnvironmentUsed} used=${run.environment_used} />
    <section aria-labelledby="metrics-h"><h2 id="metrics-h">Metrics</h2>
      ${charts.length === 0 && html`<p class="hint">Nothing logged yet.</p>`}
      <div class="grid">${charts.map((m) => html`<${MetricView} key=${m.name} runId=${run.id} metric=${m}
          version=${(versions[m.name] || 0) + (versions['*'] || 0)} />`)}</div>
    </section>
    ${images.length > 0 && html`<section aria-labelledby="images-h"><h2 id="images-h">Images</h2>
      <div class="grid">${images.map((m) => html`<${ImageView} key=${m.name} runId=${run.id} metric=${m}
          version=${(versions[m.name] || 0) + (versions['*'] || 0)} />`)}</div></section>`}
    <div class="two">
      <${KeyValues} title="Tags" values=${tags} />
      <${KeyValues} title="Properties" values=${properties} />
    </div>
    <section aria-labelledby="logs-h"><h2 id="logs-h">Log</h2><${LogTail} text=${log} run=${run} /></section>
    <section aria-labelledby="files-h"><h2 id="files-h">Files</h2>
      ${files.length === 0 ? html`<p class="hint">No files.</p>` : html`<div class="scroll"><table class="compact files" data-testid="files">
        <thead><tr><th>Name</th><th class="num">Size</th><th>Stored</th></tr></thead>
        <tbody>${files.map((f) => html`<tr key=${f.name}>
          <td><a href=${`/api/v1/runs/${enc(run.id)}/files/${f.name.split('/').map(enc).join('/')}`} download>${f.name}</a></td>
          <td class="num" title=${`${f.size} bytes`}>${bytes(f.size)}</td><td>${when(f.created_at)}</td></tr>`)}</tbody></table></div>`}
    </section>
    ${(children.data.length > 0 || childPager.page > 0) && html`<section aria-labelledby="children-h"><h2 id="children-h">Child runs${children.count === null ? '' : ` (${children.count})`}</h2>
      <table data-testid="children"><thead><tr><th>Run</th><th>Status</th><th>Duration</th></tr></thead><tbody>
      ${children.data.map((c) => html`<tr key=${c.id}><td><${RunLink} run=${c} /></td>
        <td><span class=${`status s-${c.status}`}>${c.status}</span></td><td>${duration(runDuration(c))}</td></tr>`)}</tbody></table>
      <${Pager} page=${childPager.page} size=${CHILD_PAGE} rows=${children.data.length} count=${children.count}
        nextCursor=${children.next_cursor} onTurn=${childPager.onTurn} label="child runs" testid="children-pager" /></section>`}
  </main>`;
}

// What to read first on a run that failed, was canceled or has not started: its status,
// the reason, and for a failure the last lines of its traceback.
function Verdict({ run, log }) {
  const started = Boolean(run.starting_at || run.running_at);
  if (run.status === 'Failed' || run.status === 'Canceled') {
    const tail = run.status === 'Failed' ? failureTail(log) : [];
    const reason = run.failure_reason || (run.status === 'Canceled' ? 'canceled' : 'no reason recorded');
    return html`<section class=${`verdict v-${run.status}`} data-testid="verdict" aria-labelledby="verdict-h">
      <h2 id="verdict-h">${run.status}${started ? '' : ' before it started'}</h2>
      <p data-testid="reason">${reason}</p>
      ${tail.length > 0 && html`<pre class="log" data-testid="traceback" aria-label="end of the log">${tail.join('\n')}</pre>`}
    </section>`;
  }
  if (!started && !TERMINAL.has(run.status)) {
    const where = run.position ? `position ${run.position} in the queue of ${run.cluster}` : '';
    const why = run.pending_reason || (run.status === 'Preparing' ? 'preparing its environment' : 'waiting to be scheduled');
    return html`<section class="verdict v-waiting" data-testid="verdict" aria-labelledby="verdict-h">
      <h2 id="verdict-h">Not started yet</h2>
      <p data-testid="reason">${why}${where ? ` (${where})` : ''}</p></section>`;
  }
  return null;
}

// What the run ran with, as its worker reported it: name:version, content hash, whether it
// was built or found built, and the resolved packages (a long list, so folded).
function EnvironmentUsed({ used }) {
  if (!used) return null;
  const name = used.name || '(unnamed)';
  const built = used.hash === null ? 'nothing to build' : used.cached ? 'found built (cached)' : `built in ${duration(used.build_seconds)}`;
  const packages = used.packages || [];
  const count = `${packages.length} package${packages.length === 1 ? '' : 's'}`;
  return html`<section aria-labelledby="environment-h" data-testid="environment"><h2 id="environment-h">Environment</h2>
    <dl class="facts">
      <dt>Name</dt><dd data-testid="environment-name">${used.version ? `${name}:${used.version}` : name}</dd>
      <dt>Hash</dt><dd class="digest" data-testid="environment-hash">${used.hash || 'none'}</dd>
      <dt>Build</dt><dd data-testid="environment-build">${built}</dd>
      ${used.image && html`<dt>Image</dt><dd>${used.image}</dd>`}
      ${used.venv && html`<dt>Venv</dt><dd>${used.venv}</dd>`}
    </dl>
    ${packages.length === 0
      ? html`<p class="hint" data-testid="environment-packages">${count}: Runyard installed nothing for this run.</p>`
      : html`<details class="packages" data-testid="environment-packages"><summary>${count}</summary>
        <ul>${packages.map((p) => html`<li key=${p}>${p}</li>`)}</ul></details>`}
  </section>`;
}

function Timeline({ run }) {
  const steps = timeline(run);
  const total = steps.reduce((n, s) => n + s.seconds, 0) || 1;
  return html`<section aria-labelledby="timeline-h"><h2 id="timeline-h">Timeline</h2>
    <div class="timeline" aria-hidden="true">${steps.map((s) => html`<span class=${`seg s-${s.state}`}
        style=${`flex-grow:${Math.max(s.seconds / total, 0.02)}`} title=${`${s.state}: ${duration(s.seconds)}`}></span>`)}</div>
    <ol class="steps">${steps.map((s) => html`<li><span class=${`status s-${s.state}`}>${s.state}</span>
      ${when(s.at)} · ${duration(s.seconds)}</li>`)}</ol></section>`;
}

function KeyValues({ title, values }) {
  const entries = Object.entries(values);
  return html`<section><h2>${title}</h2>${entries.length === 0 ? html`<p class="hint">None.</p>` : html`<table class="compact">
    <tbody>${entries.map(([k, v]) => html`<tr key=${k}><th scope="row">${k}</th><td>${v}</td></tr>`)}</tbody></table>`}</section>`;
}

function LogTail({ text, run }) {
  const box = useRef(null);
  const opened = useRef(false); // the first text arrives whole: open at its end
  useEffect(() => {
    const el = box.current;
    if (!el || !text) return;
    if (!opened.current || el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
    opened.current = true;
  }, [text]);
  return html`<pre class="log" ref=${box} tabindex="0" data-testid="log" aria-label="run log">${text || emptyLog(run)}</pre>`;
}

function emptyLog(run) {
  const started = Boolean(run.starting_at || run.running_at);
  if (started) return TERMINAL.has(run.status) ? '(no output)' : '(no output yet)';
  const reason = run.failure_reason || run.pending_reason;
  const state = TERMINAL.has(run.status) ? `${run.status} before it started` : 'not started yet';
  return `(no output: ${state}${reason ? ` — ${reason}` : ''})`;
}

// A series' shape decides its view (as Azure ML's studio does): repeated scalars or a list
// → line; rows or a table whose first column is numeric → a line of each other numeric
// column against the first, and the rows as a table beneath; one value → the value; any
// other table → a table.
function MetricView({ runId, metric, version }) {
  if (metric.kind === 'scalar' || metric.kind === 'list') {
    return html`<${SeriesView} runId=${runId} metric=${metric} version=${version} />`;
  }
  return html`<${TabularView} runId=${runId} metric=${metric} version=${version} />`;
}

function SeriesView({ runId, metric, version }) {
  const [series, setSeries] = useState(null);
  const [range, setRange] = useState(null);
  useEffect(() => {
    let alive = true;
    const params = { max_points: MAX_POINTS, limit: MAX_POINTS };
    if (range) Object.assign(params, { start: Math.max(0, Math.floor(range[0])), end: Math.ceil(range[1]) });
    api(`/runs/${enc(runId)}/metrics/${enc(metric.name)}/history`, { params }).then((r) => alive && setSeries(r));
    return () => {
      alive = false;
    };
  }, [runId, metric.name, version, range && range.join(',')]);
  if (!series) return html`<figure class="card"><figcaption>${metric.name}</figcaption><p>Loading…</p></figure>`;
  const numeric = series.points.filter((p) => typeof p[1] === 'number' || p[1] === null);
  if (series.count <= 1 && !range) {
    const value = series.points.length ? series.points[0][1] : null;
    return html`<figure class="card value" data-metric=${metric.name}><figcaption>${metric.name}</figcaption>
      <p class="big" data-testid=${`value-${metric.name}`}>${formatValue(value)}</p></figure>`;
  }
  if (numeric.length < series.points.length) {
    return html`<${PointsTable} name=${metric.name} columns=${['index', 'value']} rows=${series.points} />`;
  }
  const data = [numeric.map((p) => p[0]), numeric.map((p) => p[1])];
  return html`<figure class="card" data-metric=${metric.name}>
    <figcaption>${metric.name} <span class="hint">${series.count} point(s)${series.downsampled ? ', downsampled' : ''}</span>
      ${range && html`<button class="small" onClick=${() => setRange(null)}>Reset zoom</button>`}</figcaption>
    <${Chart} data=${data} labels=${[metric.name]} xLabel="step" integerX=${true} testid=${`chart-${metric.name}`}
      onZoom=${(min, max) => setRange([min, max])} /></figure>`;
}

function TabularView({ runId, metric, version }) {
  const [points, setPoints] = useState(null);
  useEffect(() => {
    let alive = true;
    api(`/runs/${enc(runId)}/metrics`, { params: { name: metric.name } }).then(
      (r) => alive && setPoints(((r.runs[runId] || {})[metric.name] || {}).points || []),
    );
    return () => {
      alive = false;
    };
  }, [runId, metric.name, version]);
  const table = useMemo(() => {
    if (!points) return null;
    const columns = [];
    const rows = new Map();
    for (const [idx, column, value] of points) {
      if (!columns.includes(column)) columns.push(column);
      if (!rows.has(idx)) rows.set(idx, {});
      rows.get(idx)[column] = value;
    }
    return { columns, rows: [...rows.entries()].sort((a, b) => a[0] - b[0]).map(([, row]) => row) };
  }, [points]);
  if (!table) return html`<figure class="card"><figcaption>${metric.name}</figcaption><p>Loading…</p></figure>`;
  const [first] = table.columns;
  const numeric = (c) => table.rows.every((r) => typeof r[c] === 'number' || r[c] === null);
  const rows = table.rows.map((r) => table.columns.map((c) => r[c]));
  if (table.rows.length === 1 && table.columns.length === 1) {
    return html`<figure class="card value" data-metric=${metric.name}><figcaption>${metric.name}</figcaption>
      <p class="big">${formatValue(table.rows[0][first])}</p></figure>`;
  }
  // Every numeric column against the first (log_row("fit", epoch=..., w=..., b=...) draws
  // w and b by epoch), and the rows as a table beneath.
  const ys = table.columns.slice(1).filter(numeric);
  if (first === undefined || !numeric(first) || ys.length === 0 || table.rows.length < 2) {
    return html`<${PointsTable} name=${metric.name} columns=${table.columns} rows=${rows} />`;
  }
  const sorted = table.rows.filter((r) => r[first] !== null).sort((a, b) => a[first] - b[first]);
  const data = [sorted.map((r) => r[first]), ...ys.map((c) => sorted.map((r) => r[c]))];
  const counts = sorted.every((r) => Number.isInteger(r[first]));
  return html`<figure class="card" data-metric=${metric.name}>
    <figcaption>${metric.name} <span class="hint">${ys.join(', ')} against ${first}</span></figcaption>
    <${Chart} data=${data} labels=${ys} xLabel=${first} integerX=${counts} testid=${`chart-${metric.name}`} />
    <${RowsTable} name=${metric.name} columns=${table.columns} rows=${rows} /></figure>`;
}

function PointsTable({ name, columns, rows }) {
  return html`<figure class="card" data-metric=${name}><figcaption>${name}
      <span class="hint">${rows.length} row(s)</span></figcaption>
    <${RowsTable} name=${name} columns=${columns} rows=${rows} /></figure>`;
}

// A logged row or table as an HTML table: the first TABLE_ROWS rows, then how many more.
function RowsTable({ name, columns, rows }) {
  const shown = rows.slice(0, TABLE_ROWS);
  const more = rows.length - shown.length;
  const numeric = columns.map((_, i) => rows.every((row) => typeof row[i] === 'number' || row[i] === null));
  const cell = (v, i) => html`<td class=${numeric[i] ? 'num' : undefined}>${formatValue(v)}</td>`;
  return html`<div class="scroll"><table class="compact" data-testid=${`table-${name}`}>
    <thead><tr>${columns.map((c, i) => html`<th scope="col" class=${numeric[i] ? 'num' : undefined}>${c}</th>`)}</tr></thead>
    <tbody>${shown.map((row) => html`<tr>${row.map(cell)}</tr>`)}</tbody></table>
    ${more > 0 && html`<p class="hint" data-testid=${`more-${name}`}>${more} more row${more === 1 ? '' : 's'}</p>`}</div>`;
}

function ImageView({ runId, metric, version }) {
  const [paths, setPaths] = useState([]);
  useEffect(() => {
    api(`/runs/${enc(runId)}/metrics`, { params: { name: metric.name } }).then((r) =>
      setPaths((((r.runs[runId] || {})[metric.name] || {}).points || []).map((p) => p[2])),
    );
  }, [runId, metric.name, version]);
  return html`<figure class="card" data-metric=${metric.name}><figcaption>${metric.name}</figcaption>
    ${paths.slice(-6).map((path) => html`<img loading="lazy" alt=${`${metric.name}: ${path}`} data-testid=${`image-${metric.name}`}
      src=${`/api/v1/runs/${enc(runId)}/files/${String(path).split('/').map(enc).join('/')}`} />`)}</figure>`;
}
