// A link to a run, named as a person names it (display name, else id) on one line: a long
// id ends in an ellipsis and shows whole on hover, never wrapping the row it sits in.
import { html } from './html.js';
import { follow } from './util.js';

export function RunLink({ run }) {
  const name = run.display_name || run.id;
  const title = run.display_name ? `${run.display_name} (${run.id})` : run.id;
  return html`<a class="run-id" href=${`/runs/${encodeURIComponent(run.id)}`} onClick=${follow} title=${title}>${name}</a>`;
}
