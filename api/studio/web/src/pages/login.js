// Sign in with a token: the API answers with an HttpOnly session cookie.
import { useState } from 'preact/hooks';
import { signIn } from '../api.js';
import { html } from '../html.js';
import { navigate } from '../util.js';

export function Login({ onSignedIn }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      const me = await signIn(token);
      onSignedIn(me);
      const next = new URLSearchParams(location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/clusters');
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }

  return html`<main class="login">
    <h1>Runyard Studio</h1>
    <form onSubmit=${submit}>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required autofocus
        value=${token} onInput=${(e) => setToken(e.target.value)} placeholder="ryt_…" />
      <p class="hint">Use an admin, member or viewer token (<code>runyard token create</code>;
        <code>runyard up</code> writes one to <code>.runyard/config.json</code>).</p>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}
