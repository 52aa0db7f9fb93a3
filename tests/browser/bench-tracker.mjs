// Benchmark (not a test): the tracker's cost on the page, in headless
// Chromium against a running Orrery.
//
// - evaluation: the script-tag build inlined in a page between two
//   performance marks (parse, run, auto-init and the first page view
//   queued), over RUNS fresh page loads; median and p90 in ms;
// - per event: `orrery.track()` called EVENTS times in a loop, with the
//   default batching (10 events or 2 s, so a request every 10 events) and
//   with batching out of the way (only queueing); µs per call.
// The same for posthog-js (`posthog.capture`, its default batching) for
// scale, unless BENCH_POSTHOG=0.
//
//   ORRERY_URL=http://127.0.0.1:8080 ORRERY_KEY=pk_... node tests/browser/bench-tracker.mjs
// Env: RUNS (default 30), EVENTS (default 5000).

import fs from 'node:fs';
import path from 'node:path';

import { HERE, launchBrowser, log, orreryUrl, requireEnv, serveSite } from './harness.mjs';

const ORRERY = orreryUrl();
const KEY = requireEnv('ORRERY_KEY');
const RUNS = Number(process.env.RUNS ?? 30);
const EVENTS = Number(process.env.EVENTS ?? 5000);
const SOURCE = fs.readFileSync(path.join(HERE, '../../sdk/js/dist/tracker.min.js'), 'utf8');
// Inlined too, so that both are timed without their download.
const POSTHOG = fs
  .readFileSync(path.join(HERE, 'node_modules/posthog-js/dist/array.full.js'), 'utf8')
  .replaceAll('</script', '<\\/script');

const evalPage = `<!doctype html><html><head><meta charset="utf-8"><title>bench</title>
<script>performance.mark('t0')</script>
<script data-key="${KEY}" data-api="${ORRERY}" data-flush-interval="600000" data-batch-size="1000">${SOURCE}</script>
<script>performance.mark('t1')</script></head><body>bench</body></html>`;

const loopPage = (attrs) => `<!doctype html><html><head><meta charset="utf-8"><title>bench</title>
<script data-key="${KEY}" data-api="${ORRERY}" ${attrs}>${SOURCE}</script></head><body>loop</body></html>`;

const posthogPage = `<!doctype html><html><head><meta charset="utf-8"><title>bench</title>
<script>performance.mark('t0')</script>
<script>${POSTHOG}</script>
<script>performance.mark('t1');
posthog.init(${JSON.stringify(KEY)}, {api_host: ${JSON.stringify(ORRERY)}, autocapture: false, capture_pageview: true, disable_session_recording: true});
performance.mark('t2');</script></head><body>posthog</body></html>`;

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: +at(0.5).toFixed(3), p90: +at(0.9).toFixed(3), min: +s[0].toFixed(3) };
};

const site = await serveSite({
  pages: {
    '/eval': evalPage,
    '/batched': loopPage(''),
    '/queued': loopPage('data-flush-interval="600000" data-batch-size="1000000"'),
    '/posthog': posthogPage,
  },
});
const browser = await launchBrowser();
const result = { chromium: browser.version(), runs: RUNS, events: EVENTS, tracker_bytes: SOURCE.length, posthog_bytes: POSTHOG.length };

const ctx = await browser.newContext();
const measure = async (url, fn, arg) => {
  const page = await ctx.newPage();
  await page.goto(site.url(url), { waitUntil: 'load' });
  const v = await page.evaluate(fn, arg);
  await page.close();
  return v;
};

const evals = [];
for (let i = 0; i < RUNS; i++) {
  evals.push(await measure('/eval', () => performance.measure('e', 't0', 't1').duration));
}
result.orrery_eval_ms = stats(evals);

const loop = (n) => {
  const t = performance.now();
  for (let i = 0; i < n; i++) window.orrery.track('bench', { i, plan: 'pro' });
  return ((performance.now() - t) * 1000) / n;
};
const batched = [];
const queued = [];
for (let i = 0; i < 5; i++) {
  batched.push(await measure('/batched', loop, EVENTS));
  queued.push(await measure('/queued', loop, EVENTS));
}
result.orrery_track_us_batched = stats(batched);
result.orrery_track_us_queue_only = stats(queued);

if (process.env.BENCH_POSTHOG !== '0') {
  const pe = [];
  const pi = [];
  for (let i = 0; i < RUNS; i++) {
    const [e, init] = await measure('/posthog', () => [
      performance.measure('e', 't0', 't1').duration,
      performance.measure('i', 't1', 't2').duration,
    ]);
    pe.push(e);
    pi.push(init);
  }
  result.posthog_eval_ms = stats(pe);
  result.posthog_init_ms = stats(pi);
  const pl = [];
  for (let i = 0; i < 5; i++) {
    pl.push(
      await measure(
        '/posthog',
        (n) => {
          const t = performance.now();
          for (let i = 0; i < n; i++) window.posthog.capture('bench', { i, plan: 'pro' });
          return ((performance.now() - t) * 1000) / n;
        },
        EVENTS,
      ),
    );
  }
  result.posthog_capture_us = stats(pl);
}

await ctx.close();
await browser.close();
await site.close();
log(JSON.stringify(result, null, 2));
process.stdout.write(`${JSON.stringify(result)}\n`);
