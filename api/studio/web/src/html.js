// One tagged-template helper for every component: JSX-like markup without a compile step.
import { h } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);
