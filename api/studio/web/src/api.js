// Every call to the Runyard API from the Studio: the session cookie authenticates, and a
// state-changing call echoes the CSRF token the sign-in set (see api/auth.py).

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)runyard_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : '';
}

// Metric values may be NaN or infinite; Python's JSON spells them bare, JavaScript's cannot
// read them. They are charted as gaps.
function parse(text) {
  if (!text) return null;
  return JSON.parse(text.replace(/(?<=[\[,:]\s*)(-?Infinity|NaN)(?=\s*[\],}])/g, 'null'));
}

export async function api(path, { method = 'GET', body, params } = {}) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let url = '/api/v1' + path;
  if (params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value === undefined || value === null || value === '') continue;
      for (const item of Array.isArray(value) ? value : [value]) query.append(key, item);
    }
    const text = query.toString();
    if (text) url += '?' + text;
  }
  const response = await fetch(url, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = parse(await response.text());
  if (response.status === 401) {
    signInAgain();
    throw new ApiError(401, (data && data.detail) || 'sign in');
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}

export async function signIn(token) {
  const response = await fetch('/api/v1/session', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + token.trim() },
    credentials: 'same-origin',
  });
  const data = parse(await response.text());
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || 'sign-in failed');
  return data;
}

function signInAgain() {
  if (location.pathname !== '/login') {
    const next = location.pathname + location.search;
    history.replaceState(null, '', '/login?next=' + encodeURIComponent(next));
    window.dispatchEvent(new PopStateEvent('popstate'));
  }
}
