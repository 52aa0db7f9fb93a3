// The script-tag build: <script src="https://orrery.example/sdk/tracker.js"
// data-key="pk_..."></script> starts tracking at once as `window.orrery`;
// `window.Orrery.init(options)` is there for pages that start it later.
import { init } from './tracker.js';

const s = document.currentScript;
const d = (s && s.dataset) || {};
window.Orrery = { init };
if (d.key)
  window.orrery = init({
    key: d.key,
    api: d.api || new URL(s.src).origin,
    spa: d.spa != 'false',
    auto: d.auto != 'false',
    outbound: 'outbound' in d,
    downloads: 'downloads' in d,
    storage: d.storage,
    respectDnt: d.respectDnt != 'false',
    batchSize: +d.batchSize,
    flushInterval: +d.flushInterval,
  });
