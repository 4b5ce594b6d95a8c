// One page of a list the API answers in keyset pages: the cursors read so far make a stack
// (Next pushes the page's next_cursor, Previous pops), and the pager shows where the page
// sits ("showing 101–200 of 250") when the API knows the total.
import { useState } from 'preact/hooks';
import { html } from './html.js';

// A stack of cursors after one Next (cursor given) or Previous (null): why a page can go back.
export function turn(stack, cursor) {
  return cursor ? [...stack, cursor] : stack.slice(0, -1);
}

// The cursor stack of one list: `cursor` reads the current page, `page` counts from 0.
export function usePager() {
  const [stack, setStack] = useState([]);
  return {
    cursor: stack.length ? stack[stack.length - 1] : undefined,
    page: stack.length,
    onTurn: (cursor) => setStack((s) => turn(s, cursor)),
    reset: () => setStack([]),
  };
}

// Previous / page n / Next with "showing a–b of N"; hidden when everything fits on one page.
export function Pager({ page = 0, size, rows, count, nextCursor, onTurn, label, testid }) {
  if (!page && !nextCursor) return null;
  const first = page * size + 1;
  const last = page * size + rows;
  const range = rows ? `showing ${first}\u2013${last}${count === null || count === undefined ? '' : ` of ${count}`}` : '';
  return html`<p class="pager" data-testid=${testid}>
    <button disabled=${!page} onClick=${() => onTurn(null)} aria-label=${`previous page of ${label}`}>Previous</button>
    ${' '}<span>page ${page + 1}</span>${' '}
    <button disabled=${!nextCursor} onClick=${() => onTurn(nextCursor)} aria-label=${`next page of ${label}`}>Next</button>
    ${range && html`${' '}<span class="hint" data-testid=${testid && `${testid}-range`}>${range}</span>`}</p>`;
}
