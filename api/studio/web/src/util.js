// Small formatting helpers shared by the pages.

export const TERMINAL = new Set(['Completed', 'Failed', 'Canceled']);

export function seconds(from, to) {
  if (!from) return null;
  const end = to ? new Date(to) : new Date();
  return Math.max(0, (end - new Date(from)) / 1000);
}

export function duration(total) {
  if (total === null || total === undefined) return '–';
  if (total < 60) return `${total.toFixed(total < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(total % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function runDuration(run) {
  const start = run.running_at || run.starting_at;
  return seconds(start, run.ended_at);
}

export function when(timestamp) {
  return timestamp ? new Date(timestamp).toLocaleString() : '–';
}

export function formatValue(value) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3 ? value.toExponential(4) : value.toPrecision(6);
  }
  return String(value);
}

// To another page; ``replace`` for a choice the page made itself (Back skips it).
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

// Links stay real links (open in a new tab, keyboard focus) but route inside the page.
export function follow(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const anchor = event.currentTarget;
  if (anchor.target || anchor.origin !== location.origin || anchor.pathname.startsWith('/api/')) return;
  event.preventDefault();
  navigate(anchor.pathname + anchor.search);
}

// The order a run passes through its states, for its timeline.
export const STATES = [
  ['NotStarted', 'not_started_at'],
  ['Queued', 'queued_at'],
  ['Preparing', 'preparing_at'],
  ['Starting', 'starting_at'],
  ['Running', 'running_at'],
  ['NotResponding', 'not_responding_at'],
  ['CancelRequested', 'cancel_requested_at'],
  ['Finalizing', 'finalizing_at'],
  ['Completed', 'completed_at'],
  ['Failed', 'failed_at'],
  ['Canceled', 'canceled_at'],
];

export function timeline(run) {
  const reached = STATES.filter(([, field]) => run[field])
    .map(([state, field]) => ({ state, at: new Date(run[field]) }))
    .sort((a, b) => a.at - b.at);
  return reached.map((step, i) => {
    const next = reached[i + 1];
    const end = next ? next.at : TERMINAL.has(step.state) ? step.at : new Date();
    return { ...step, seconds: Math.max(0, (end - step.at) / 1000) };
  });
}

// How far along its life a status is (terminal states last), to tell older news from newer.
export function stateOrder(status) {
  return STATES.findIndex(([state]) => state === status);
}

// A size a person reads at a glance: 6321 → "6.2 KiB".
export function bytes(size) {
  if (size === null || size === undefined) return '–';
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} ${value === 1 ? 'byte' : 'bytes'}` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// The end of a failed run's log worth reading first: from the last "Traceback" line on (at
// most ``lines`` of it, the last ones), or else the log's last ``lines`` lines.
export function failureTail(log, lines = 20) {
  const all = log.replace(/\s+$/, '').split('\n');
  if (all.length === 1 && all[0] === '') return [];
  let start = -1;
  for (let i = all.length - 1; i >= 0; i--) {
    if (all[i].startsWith('Traceback')) {
      start = i;
      break;
    }
  }
  const tail = start >= 0 ? all.slice(start) : all;
  return tail.slice(-lines);
}
