// Usage: the slot-hours and GPU-hours the runs' attempts held in a chosen period, per team
// and per cluster (GET /usage, the figures `runyard usage` prints). Every attempt counts,
// a requeued run's earlier ones too; a running one counts up to now. The period is in the
// page's address (?since=30d, or ?since=2026-11-01&until=2026-11-08, through that day, in
// UTC), so a link shows the same figures.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { html } from '../html.js';
import { navigate } from '../util.js';

const PERIODS = [
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
  ['90d', 'Last 90 days'],
];
const NO_TEAM = '(no team)';

function hours(value) {
  return value.toLocaleString(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

// A bare date ends the period with that whole day ("through"); a time ends it there.
function endOf(until) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(until)) return until;
  const next = new Date(until + 'T00:00:00Z');
  next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString().slice(0, 10);
}

function period() {
  const query = new URLSearchParams(location.search);
  return { since: query.get('since') || '30d', until: query.get('until') || '' };
}

export function Usage() {
  const { since, until } = period();
  const [reports, setReports] = useState(null);
  const [error, setError] = useState('');
  const [from, setFrom] = useState(until ? since : '');
  const [to, setTo] = useState(until);

  useEffect(() => {
    let alive = true;
    const params = { since, until: endOf(until) };
    Promise.all([
      api('/usage', { params: { ...params, by: 'team' } }),
      api('/usage', { params: { ...params, by: 'cluster' } }),
    ])
      .then(([teams, clusters]) => {
        if (!alive) return;
        setReports({ teams, clusters });
        setError('');
      })
      .catch((err) => alive && setError(err.message));
    return () => {
      alive = false;
    };
  }, [since, until]);

  const choose = (params) => navigate('/usage?' + new URLSearchParams(params).toString(), { replace: true });
  const custom = (event) => {
    event.preventDefault();
    if (from) choose(to ? { since: from, until: to } : { since: from });
  };
  const known = !until && PERIODS.some(([value]) => value === since);
  return html`<main>
    <h1>Usage</h1>
    <p class="hint">Slot-hours and GPU-hours the runs held: every attempt counts (a requeued run's too), a running one up to now.</p>
    <form class="toolbar" onSubmit=${custom}>
      <label>Period
        <select aria-label="Period" value=${known ? since : 'custom'}
          onChange=${(e) => e.target.value !== 'custom' && choose({ since: e.target.value })}>
          ${PERIODS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
          <option value="custom">Dates below</option>
        </select></label>
      <label>From<input type="date" aria-label="From" value=${from} onInput=${(e) => setFrom(e.target.value)} /></label>
      <label>Through<input type="date" aria-label="Through" value=${to} onInput=${(e) => setTo(e.target.value)} /></label>
      <button type="submit" disabled=${!from}>Show</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!reports && !error && html`<p>Loading…</p>`}
    ${reports && html`<p class="hint" data-testid="usage-period">${new Date(reports.teams.since).toLocaleString()} – ${new Date(reports.teams.until).toLocaleString()}</p>
      <div class="two">
        <${UsageTable} title="Per team" column="Team" keyName="team" report=${reports.teams} testid="usage-teams" />
        <${UsageTable} title="Per cluster" column="Cluster" keyName="cluster" report=${reports.clusters} testid="usage-clusters" />
      </div>`}
  </main>`;
}

function UsageTable({ title, column, keyName, report, testid }) {
  const shown = (row) => (keyName === 'team' && row.team === '' ? NO_TEAM : row[keyName]);
  return html`<table data-testid=${testid}>
    <caption>${title}</caption>
    <thead><tr><th>${column}</th><th class="num">Attempts</th><th class="num">Slot-hours</th><th class="num">GPU-hours</th></tr></thead>
    <tbody>
      ${report.data.length === 0 && html`<tr><td colspan="4">No run held a slot in this period.</td></tr>`}
      ${report.data.map((row) => html`<tr key=${shown(row)}>
        <td>${shown(row)}</td><td class="num">${row.attempts}</td>
        <td class="num">${hours(row.slot_hours)}</td><td class="num">${hours(row.gpu_hours)}</td></tr>`)}
      ${report.data.length > 1 && html`<tr class="total"><th>Total</th><th class="num">${report.total.attempts}</th>
        <th class="num">${hours(report.total.slot_hours)}</th><th class="num">${hours(report.total.gpu_hours)}</th></tr>`}
    </tbody></table>`;
}
