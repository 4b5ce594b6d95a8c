// The Studio: a small single-page app served by the API itself (api/studio/routes.py).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api } from './api.js';
import { html } from './html.js';
import { Clusters } from './pages/clusters.js';
import { Compare } from './pages/compare.js';
import { Experiment, Experiments } from './pages/experiments.js';
import { Login } from './pages/login.js';
import { RunPage } from './pages/run.js';
import { Usage } from './pages/usage.js';
import { follow, navigate } from './util.js';

function usePath() {
  const [path, setPath] = useState(location.pathname + location.search);
  useEffect(() => {
    const changed = () => setPath(location.pathname + location.search);
    window.addEventListener('popstate', changed);
    return () => window.removeEventListener('popstate', changed);
  }, []);
  return path;
}

function page(pathname, me) {
  let match;
  if ((match = pathname.match(/^\/runs\/([^/]+)$/))) return html`<${RunPage} id=${decodeURIComponent(match[1])} me=${me} />`;
  if ((match = pathname.match(/^\/experiments\/([^/]+)$/))) return html`<${Experiment} name=${decodeURIComponent(match[1])} />`;
  if (pathname === '/experiments') return html`<${Experiments} />`;
  if (pathname === '/compare') return html`<${Compare} />`;
  if (pathname === '/usage') return html`<${Usage} key=${location.search} />`;
  if (pathname === '/clusters' || pathname === '/') return html`<${Clusters} me=${me} />`;
  return html`<main><h1>Not found</h1><p>No page at ${pathname}.</p></main>`;
}

function App() {
  const path = usePath();
  const [me, setMe] = useState(null);
  const pathname = path.split('?')[0];
  const embedded = new URLSearchParams(location.search).has('embed');

  useEffect(() => {
    if (pathname !== '/login' && !me) api('/whoami').then(setMe).catch(() => {});
  }, [pathname]);

  if (pathname === '/login') return html`<${Login} onSignedIn=${setMe} />`;
  const signOut = async () => {
    await api('/session', { method: 'DELETE' }).catch(() => {});
    setMe(null);
    navigate('/login');
  };
  const link = (href, label) => html`<a href=${href} onClick=${follow}
      aria-current=${pathname.startsWith(href) ? 'page' : undefined}>${label}</a>`;
  return html`${!embedded && html`<nav class="top" aria-label="main">
      <a class="brand" href="/clusters" onClick=${follow}>Runyard</a>
      ${link('/clusters', 'Clusters')}${link('/experiments', 'Experiments')}${link('/compare', 'Compare')}${link('/usage', 'Usage')}
      <span class="me">${me ? `${me.name} (${me.role})` : ''}</span>
      ${me && html`<button class="link" onClick=${signOut}>Sign out</button>`}</nav>`}
    ${page(pathname, me)}`;
}

render(html`<${App} />`, document.getElementById('app'));
