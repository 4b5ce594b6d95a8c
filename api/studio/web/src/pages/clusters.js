// Every cluster: its teams (on a cluster with quotas: each one's use against its quota,
// what it borrows and lends, its waiting runs and fair share), its nodes (workers, busy and idle slots), its queue and its active runs,
// with cancel (one or many), change priority and move to front; and its recent history (the
// last runs that ended there: status, reason, duration, when). A queue is shown a page at a
// time (the API's cursors): Next / Previous walk it; positions count from the head. The
// clusters themselves, and each cluster's active runs, are pages too.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { html } from '../html.js';
import { Pager, turn as turnStack, usePager } from '../pager.js';
import { RunLink } from '../runlink.js';
import { duration, runDuration, seconds, when } from '../util.js';

const POLL_MS = 1500;
const HISTORY = 10; // ended runs shown per cluster
const QUEUE_PAGE = 100; // queued runs per page
const ACTIVE_PAGE = 100; // active runs per page
const CLUSTER_PAGE = 50; // clusters per page

export function Clusters({ me }) {
  const [clusters, setClusters] = useState(null);
  const [runs, setRuns] = useState({});
  const [history, setHistory] = useState({});
  const [pages, setPages] = useState({}); // cluster -> {count, next_cursor} of its queue page
  const [cursors, setCursors] = useState({}); // cluster -> cursors of the pages before this one
  const [activePages, setActivePages] = useState({}); // cluster -> {count, next_cursor, page}
  const [activeCursors, setActiveCursors] = useState({}); // as cursors, for the active runs
  const [listPage, setListPage] = useState({}); // {count, next_cursor} of the clusters page
  const clusterPager = usePager();
  const [error, setError] = useState('');
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let alive = true;
    async function load() {
      try {
        const listParams = { limit: CLUSTER_PAGE };
        if (clusterPager.cursor) listParams.cursor = clusterPager.cursor;
        const listed = await api('/clusters', { params: listParams });
        const list = listed.data;
        const byCluster = {};
        const ended = {};
        const queuePages = {};
        const runningPages = {};
        await Promise.all(
          list.map(async (c) => {
            const name = encodeURIComponent(c.name);
            const stack = cursors[c.name] || [];
            const queueParams = { status: 'queued', limit: QUEUE_PAGE };
            if (stack.length) queueParams.cursor = stack[stack.length - 1];
            const activeStack = activeCursors[c.name] || [];
            const activeParams = { status: 'active', limit: ACTIVE_PAGE };
            if (activeStack.length) activeParams.cursor = activeStack[activeStack.length - 1];
            const [queue, active, past] = await Promise.all([
              api(`/clusters/${name}/runs`, { params: queueParams }),
              api(`/clusters/${name}/runs`, { params: activeParams }),
              api(`/clusters/${name}/history`, { params: { limit: HISTORY } }),
            ]);
            byCluster[c.name] = [...queue.data, ...active.data];
            queuePages[c.name] = { count: queue.count, next_cursor: queue.next_cursor, page: stack.length };
            runningPages[c.name] = { count: active.count, next_cursor: active.next_cursor, page: activeStack.length };
            ended[c.name] = past.data;
          }),
        );
        if (!alive) return;
        setClusters(list);
        setRuns(byCluster);
        setHistory(ended);
        setPages(queuePages);
        setActivePages(runningPages);
        setListPage({ count: listed.count, next_cursor: listed.next_cursor });
        setError('');
      } catch (err) {
        if (alive) setError(err.message);
      }
    }
    load();
    const timer = setInterval(load, POLL_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [tick, cursors, activeCursors, clusterPager.cursor]);

  const refresh = () => setTick((t) => t + 1);
  // Next: remember the cursor that reads the next page; Previous: forget the last one.
  const turn = (name, cursor) => setCursors((all) => ({ ...all, [name]: turnStack(all[name] || [], cursor) }));
  const turnActive = (name, cursor) =>
    setActiveCursors((all) => ({ ...all, [name]: turnStack(all[name] || [], cursor) }));
  if (!clusters) return html`<main><h1>Clusters</h1>${error ? html`<p class="error">${error}</p>` : html`<p>Loading…</p>`}</main>`;
  const canAct = me && (me.role === 'admin' || me.role === 'member');
  return html`<main>
    <h1>Clusters</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${clusters.length === 0 && html`<p>No clusters yet: <code>runyard cluster create NAME</code>.</p>`}
    ${clusters.map((c) => html`<${ClusterCard} key=${c.name} cluster=${c} runs=${runs[c.name] || []} history=${history[c.name] || []}
        page=${pages[c.name] || {}} onTurn=${(cursor) => turn(c.name, cursor)}
        activePage=${activePages[c.name] || {}} onActiveTurn=${(cursor) => turnActive(c.name, cursor)}
        canAct=${canAct} onChange=${refresh} />`)}
    <${Pager} page=${clusterPager.page} size=${CLUSTER_PAGE} rows=${clusters.length} count=${listPage.count}
      nextCursor=${listPage.next_cursor} onTurn=${clusterPager.onTurn} label="clusters" testid="clusters-pager" />
  </main>`;
}

function ClusterCard({ cluster, runs, history, page, onTurn, activePage, onActiveTurn, canAct, onChange }) {
  const [selected, setSelected] = useState(new Set());
  const [message, setMessage] = useState('');
  const queued = runs.filter((r) => r.status === 'Queued' || r.status === 'NotStarted');
  const queuedIds = new Set(queued.map((r) => r.id));
  const active = runs.filter((r) => !queuedIds.has(r.id));
  const busy = cluster.workers.reduce((n, w) => n + w.busy, 0);
  const slots = cluster.workers.reduce((n, w) => n + w.slots, 0);
  const stranded = cluster.queued > 0 && cluster.workers.length === 0;

  function toggle(id) {
    const next = new Set(selected);
    next.has(id) ? next.delete(id) : next.add(id);
    setSelected(next);
  }

  async function act(label, work) {
    setMessage('');
    try {
      await work();
      onChange();
    } catch (err) {
      setMessage(`${label}: ${err.message}`);
    }
  }

  const cancel = (run) => {
    if (!confirm(`Cancel run ${run.id}?`)) return;
    act('cancel', () => api(`/runs/${encodeURIComponent(run.id)}/cancel`, { method: 'POST' }));
  };
  const cancelSelected = () => {
    const ids = [...selected].filter((id) => runs.some((r) => r.id === id));
    if (!ids.length || !confirm(`Cancel ${ids.length} selected run(s)?`)) return;
    act('cancel', async () => {
      await api('/runs/cancel', { method: 'POST', body: { run_ids: ids } });
      setSelected(new Set());
    });
  };
  const toFront = (run) =>
    act('move to front', () => api(`/runs/${encodeURIComponent(run.id)}`, { method: 'PATCH', body: { move_to_front: true } }));
  const setPriority = (run, value) => {
    const priority = Number.parseInt(value, 10);
    if (Number.isNaN(priority) || priority === run.priority) return;
    act('priority', () => api(`/runs/${encodeURIComponent(run.id)}`, { method: 'PATCH', body: { priority } }));
  };

  const check = (run) => canAct && html`<td><input type="checkbox" aria-label=${`select ${run.id}`}
      checked=${selected.has(run.id)} onChange=${() => toggle(run.id)} /></td>`;
  const cancelButton = (run) => canAct && html`<td><button class="danger" onClick=${() => cancel(run)}
      aria-label=${`cancel ${run.id}`}>Cancel</button></td>`;

  return html`<section class="cluster" data-cluster=${cluster.name} aria-labelledby=${`c-${cluster.name}`}>
    <header>
      <h2 id=${`c-${cluster.name}`}>${cluster.name}</h2>
      <span class="facts">${[
        cluster.executor,
        `${cluster.nodes} node(s)`,
        `${cluster.workers.length} worker(s) online`,
      ].join(' · ')} · <span data-testid="busy">${busy}</span> busy / ${Math.max(slots - busy, 0)} idle slot(s) ·
        ${' '}<span data-testid="queued-count">${cluster.queued}</span> queued · ${cluster.active} active</span>
      ${stranded && html`<span class="flag" role="status" data-testid="no-worker">Queued runs but no live worker</span>`}
    </header>
    ${message && html`<p class="error" role="alert">${message}</p>`}
    ${cluster.workers.length > 0 && html`<table class="compact"><caption>Nodes</caption>
      <thead><tr><th>Worker</th><th>Host</th><th>Slots</th><th>Busy</th><th>Runs</th></tr></thead>
      <tbody>${cluster.workers.map((w) => html`<tr key=${w.id}><td>${w.id}${w.draining ? ' (draining)' : ''}</td>
        <td>${w.hostname}</td><td>${w.slots}</td><td>${w.busy}</td><td>${w.runs.join(', ') || '–'}</td></tr>`)}</tbody></table>`}
    ${cluster.teams && cluster.teams.length > 0 && html`<${Teams} teams=${cluster.teams} />`}
    ${canAct && selected.size > 0 && html`<p><button class="danger" onClick=${cancelSelected}>Cancel selected (${selected.size})</button></p>`}
    <table data-testid="queue"><caption>Queue (${page.count ?? queued.length})${queued.length > 0 && (page.page || page.next_cursor)
        ? html` <span class="hint" data-testid="queue-range">positions ${queued.find((r) => r.position)?.position ?? '–'}–${[...queued].reverse().find((r) => r.position)?.position ?? '–'}</span>`
        : ''}</caption>
      <thead><tr>${canAct && html`<th><span class="sr">Select</span></th>`}<th>#</th><th>Run</th><th>Priority</th>
        <th>Pending reason</th><th>Waiting</th><th>Submitter</th>${canAct && html`<th><span class="sr">Actions</span></th><th></th>`}</tr></thead>
      <tbody>${queued.map((r) => html`<tr key=${r.id} data-run=${r.id}>${check(r)}
        <td>${r.position ?? '–'}</td><td><${RunLink} run=${r} /></td>
        <td>${canAct ? html`<input class="priority" type="number" min="-1000" max="1000" value=${r.priority}
            aria-label=${`priority of ${r.id}`} onChange=${(e) => setPriority(r, e.target.value)} />` : r.priority}</td>
        <td>${r.pending_reason || '–'}</td><td>${duration(seconds(r.queued_at || r.created_at))}</td>
        <td>${r.submitted_by || '–'}</td>
        ${canAct && html`<td><button onClick=${() => toFront(r)} aria-label=${`move ${r.id} to front`}>To front</button></td>`}
        ${cancelButton(r)}</tr>`)}</tbody></table>
    <${Pager} page=${page.page} size=${QUEUE_PAGE} rows=${queued.length} count=${page.count} nextCursor=${page.next_cursor}
      onTurn=${onTurn} label=${`${cluster.name}'s queue`} testid="queue-pager" />
    <table data-testid="active"><caption>Active (${activePage.count ?? active.length})</caption>
      <thead><tr>${canAct && html`<th><span class="sr">Select</span></th>`}<th>Run</th><th>Status</th><th>Node</th>
        <th>Duration</th><th>Submitter</th>${canAct && html`<th><span class="sr">Actions</span></th>`}</tr></thead>
      <tbody>${active.map((r) => html`<tr key=${r.id} data-run=${r.id}>${check(r)}
        <td><${RunLink} run=${r} /></td>
        <td><span class=${`status s-${r.status}`}>${r.status}</span></td><td>${r.worker_id || '–'}</td>
        <td>${duration(runDuration(r))}</td><td>${r.submitted_by || '–'}</td>${cancelButton(r)}</tr>`)}</tbody></table>
    <${Pager} page=${activePage.page} size=${ACTIVE_PAGE} rows=${active.length} count=${activePage.count}
      nextCursor=${activePage.next_cursor} onTurn=${onActiveTurn} label=${`${cluster.name}'s active runs`} testid="active-pager" />
    <table data-testid="history"><caption>Recent history (${history.length})</caption>
      <thead><tr><th>Run</th><th>Status</th><th>Reason</th><th>Duration</th><th>Ended</th><th>Submitter</th></tr></thead>
      <tbody>${history.length === 0 && html`<tr><td colspan="6" class="hint">No run has ended here yet.</td></tr>`}
      ${history.map((r) => html`<tr key=${r.id} data-run=${r.id}><td><${RunLink} run=${r} /></td>
        <td><span class=${`status s-${r.status}`}>${r.status}</span></td><td class="reason">${r.failure_reason || '–'}</td>
        <td>${duration(runDuration(r))}</td><td title=${r.ended_at || ''}>${when(r.ended_at)}</td>
        <td>${r.submitted_by || '–'}</td></tr>`)}</tbody></table>
  </section>`;
}

// A cluster shared by teams: each team's use against its nominal quota, borrowed (used
// beyond it), lent (of its idle quota, used by others), waiting runs, and its recent usage
// against its entitlement (1.0: exactly its share), as GET /clusters/{name} gives them.
function Teams({ teams }) {
  const gpus = teams.some((t) => t.quota_gpus > 0 || t.used_gpus > 0);
  const ratio = (t) => (t.fair_share_ratio === null || t.fair_share_ratio === undefined ? '–' : `${t.fair_share_ratio.toFixed(2)}×`);
  return html`<table class="compact" data-testid="teams"><caption>Teams</caption>
    <thead><tr><th>Team</th><th>Slots used / quota</th>${gpus && html`<th>GPUs used / quota</th>`}<th>Borrowed</th><th>Lent</th>
      <th>Waiting</th><th>Fair share</th><th>Preemptions</th></tr></thead>
    <tbody>${teams.map((t) => html`<tr key=${t.team} data-team=${t.team || '(no team)'}>
      <td>${t.team || html`<span class="hint">no team</span>`}</td>
      <td data-testid="team-used">${t.used_slots} / ${t.quota_slots}</td>${gpus && html`<td>${t.used_gpus} / ${t.quota_gpus}</td>`}
      <td data-testid="team-borrowed">${t.borrowed_slots}</td><td data-testid="team-lent">${t.lent_slots}</td>
      <td data-testid="team-waiting">${t.waiting}</td><td title="recent usage share / quota share">${ratio(t)}</td>
      <td>${t.preemptions}</td></tr>`)}</tbody></table>`;
}
