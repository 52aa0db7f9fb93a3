// The real posthog-js in a real page in headless Chromium, pointed at
// Orrery (`api_host`) as a site sets it up, with its defaults (autocapture
// on). Two visitors, each in a new browser context:
//
// - "script": the bundle in a <script> tag (dist/array.full.js, the file
//   PostHog's snippet loads), `request_batching: false`: each event is sent
//   as it happens.
// - "module": the npm package as a bundler imports it (`import posthog from
//   'posthog-js'`, i.e. dist/module.mjs), default batching: the events wait
//   in posthog-js's queue and go out when the tab is closed.
//
// Each visitor comes from the site's home page through a link (so the page
// has a referrer), gets the automatic $pageview, clicks "Sign up" (a custom
// `signup_clicked` {plan: 'pro'}, plus an $autocapture of the click), logs
// in (`posthog.identify('user-42', {email})`), and closes the tab
// ($pageleave, and the batch flush).
//
// posthog-js talks to Orrery through a tap (harness startTap: a recording
// proxy that forwards requests and answers unchanged), because Playwright
// does not report what a closing tab sends; ORRERY_TAP=0 sends straight to
// Orrery instead (the events still arrive, but the summary then misses what
// was sent while the tab closed, $pageleave included).
//
// Env: ORRERY_URL, ORRERY_POSTHOG_TOKEN (a pk_ key or a token of
// compat.posthog_tokens), ORRERY_SCREENSHOTS (optional), ORRERY_TAP.
// Prints one JSON line: per visitor the page URL and its referrer,
// posthog-js's anonymous distinct id and session id, every event posthog-js
// captured with its uuid (from `before_send`; $pageleave from the wire),
// what went to Orrery (path, query, content type, body encoding, events,
// answer), and the problems seen (answers outside 2xx, failed requests,
// console errors). Exits 1 when there is a problem.

import {
  decodeBody,
  importMap,
  launchBrowser,
  log,
  openPage,
  orreryUrl,
  requireEnv,
  runScenario,
  serveSite,
  startTap,
} from './harness.mjs';

const ORRERY = orreryUrl();
const TOKEN = requireEnv('ORRERY_POSTHOG_TOKEN');
const USE_TAP = process.env.ORRERY_TAP !== '0';
const USER = 'user-42';
const EMAIL = 'user42@shop.example';

const VISITORS = [
  {
    name: 'script',
    path: '/shop/script.html',
    head: '<script src="/node_modules/posthog-js/dist/array.full.js"></script>',
    load: 'async () => window.posthog',
    options: { request_batching: false },
  },
  {
    name: 'module',
    path: '/shop/module.html',
    head: importMap({ 'posthog-js': '/node_modules/posthog-js/dist/module.mjs' }),
    load: "async () => (await import('posthog-js')).default",
    options: {},
  },
];

const STYLE = `<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
  button { font-size: 1rem; padding: .4rem 1rem; margin: .3rem .5rem .3rem 0; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td, th { border: 1px solid #ccc; padding: .2rem .6rem; font: 13px monospace; text-align: left; }
  #status { margin-top: 1rem; font-weight: 600; }
</style>`;

function homePage() {
  const links = VISITORS.map((v) => `<li><a id="to-${v.name}" href="${v.path}?visitor=${v.name}">Shop (${v.name})</a></li>`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Home</title>${STYLE}</head>
<body><h1>Home</h1><ul>${links}</ul></body></html>`;
}

/** A shop page loading posthog-js with `v.head` and `v.load`, sending to
 * `apiHost`. */
function shopPage(v, apiHost) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Shop (${v.name})</title>
${STYLE}
${v.head}
</head>
<body>
<h1>Shop (${v.name})</h1>
<p>posthog-js <span id="version">?</span> (${v.name === 'script' ? 'dist/array.full.js in a script tag' : "import 'posthog-js' (dist/module.mjs)"}),
token <code>${TOKEN}</code>, api_host <code>${apiHost}</code>${apiHost === ORRERY ? '' : ` (a tap in front of Orrery at <code>${ORRERY}</code>)`},
options <code>${JSON.stringify(v.options)}</code>.</p>
<button id="signup" data-plan="pro">Sign up</button>
<form id="login" onsubmit="return false">
  <input id="email" type="email" value="${EMAIL}" aria-label="email">
  <button id="identify" type="submit">Log in</button>
</form>
<div id="status">loading posthog-js…</div>
<table><thead><tr><th>#</th><th>event</th><th>uuid</th></tr></thead><tbody id="events"></tbody></table>
<script type="module">
  window.__captured = [];
  const rows = document.getElementById('events');
  const posthog = await (${v.load})();
  posthog.init(${JSON.stringify(TOKEN)}, {
    api_host: ${JSON.stringify(apiHost)},
    defaults: '2026-08-30',
    ...${JSON.stringify(v.options)},
    // Only watches: every event posthog-js captures, with its uuid.
    before_send: (e) => {
      if (e) {
        window.__captured.push({ event: e.event, uuid: e.uuid });
        const tr = document.createElement('tr');
        tr.innerHTML = '<td>' + window.__captured.length + '</td><td>' + e.event + '</td><td>' + e.uuid + '</td>';
        rows.appendChild(tr);
      }
      return e;
    },
    loaded: (ph) => {
      document.getElementById('version').textContent = ph.version;
      document.getElementById('status').textContent = 'posthog-js loaded; distinct id ' + ph.get_distinct_id();
    },
  });
  window.posthog = posthog;
  document.getElementById('signup').addEventListener('click', (ev) => {
    posthog.capture('signup_clicked', { plan: ev.target.dataset.plan });
  });
  document.getElementById('login').addEventListener('submit', () => {
    posthog.identify(${JSON.stringify(USER)}, { email: document.getElementById('email').value });
    document.getElementById('status').textContent = 'identified as ' + posthog.get_distinct_id();
  });
</script>
</body>
</html>`;
}

/** The events of one capture body. */
function eventsOf(json) {
  if (!json) return [];
  if (Array.isArray(json)) return json;
  if (Array.isArray(json.batch)) return json.batch;
  return json.event ? [json] : [];
}

const CAPTURE = /^\/(e|batch|capture|i\/v0\/e)\/?$/;

async function visit(browser, site, v) {
  const tap = USE_TAP ? await startTap(ORRERY, { name: `tap (${v.name})` }) : null;
  const apiHost = tap ? tap.url : ORRERY;
  site.setPage(v.path, shopPage(v, apiHost));
  const home = site.url('/');
  const tab = await openPage(browser, home, { name: `posthog-${v.name}`, watch: [apiHost] });
  await Promise.all([tab.page.waitForURL(`**${v.path}?*`, { waitUntil: 'load' }), tab.page.click(`#to-${v.name}`)]);
  const url = tab.page.url();
  const referrer = await tab.evaluate(() => document.referrer);
  await tab.until(() => tab.evaluate(() => window.__captured?.some((e) => e.event === '$pageview')), {
    what: 'posthog-js to capture the $pageview',
  });
  const distinctId = await tab.evaluate(() => window.posthog.get_distinct_id());
  const sessionId = await tab.evaluate(() => window.posthog.get_session_id());
  // Remote config and flags first, as a person would not click at once.
  await tab.waitForIdle({ quietMs: 500 });
  await tab.page.click('#signup');
  await tab.page.click('#identify');
  await tab.until(() => tab.evaluate(() => window.__captured.some((e) => e.event === '$identify')), {
    what: 'posthog-js to capture $identify',
  });
  if (v.options.request_batching === false) await tab.waitForIdle();
  await tab.showRequests(tap ?? tab, tap ? `Requests to Orrery ${ORRERY} (through the tap ${tap.url})` : `Requests to Orrery ${ORRERY}`);
  const screenshot = await tab.screenshot(`posthog-${v.name}`);
  const captured = await tab.evaluate(() => window.__captured.slice());
  const sentBeforeClose = (tap ?? tab).requests.length;
  // Closing the tab runs posthog-js's unload handler: $pageleave, and the
  // queued batch goes out by sendBeacon.
  await tab.close({ runBeforeUnload: true });
  if (tap) {
    await tap.waitForIdle({ quietMs: 1000 });
    await tap.close();
  }
  const wire = tap ?? tab;
  const sent = [];
  for (const r of wire.requests) {
    if (!CAPTURE.test(r.path)) continue;
    const d = decodeBody(r);
    for (const e of eventsOf(d.json)) {
      sent.push({ event: e.event, uuid: e.uuid, path: r.path, encoding: d.encoding, contentType: r.contentType, status: r.status, afterClose: r.seq >= sentBeforeClose });
    }
  }
  // $pageleave is captured in the unload handler, after the last look at
  // the page: its uuid is taken from the wire.
  for (const s of sent) {
    if (!captured.some((c) => c.uuid === s.uuid)) captured.push({ event: s.event, uuid: s.uuid, fromWire: true });
  }
  const requests = wire.brief().map((r, i) => ({ ...r, afterClose: i >= sentBeforeClose }));
  const problems = [...new Set([...(tap ? tap.failures() : []), ...tab.failures(), ...tab.errors()])];
  log(`posthog ${v.name}: ${url} (referrer ${referrer || 'none'}); ${requests.length} requests to Orrery, ${captured.length} events captured`);
  for (const r of requests) {
    log(`  ${r.method} ${r.path} ${JSON.stringify(r.query)} ${r.contentType ?? '-'} ${r.encoding} items=${r.items} -> ${r.failure ?? r.status}${r.afterClose ? ' (tab closing)' : ''}`);
  }
  for (const p of problems) log(`  problem: ${p}`);
  return {
    visitor: v.name,
    url,
    referrer,
    distinct_id: distinctId,
    session_id: sessionId,
    captured,
    sent,
    requests,
    problems,
    screenshot,
  };
}

await runScenario(async (cleanup) => {
  const site = await serveSite({ pages: { '/': homePage() } });
  cleanup(() => site.close());
  const browser = await launchBrowser();
  cleanup(() => browser.close());
  const visitors = [];
  for (const v of VISITORS) visitors.push(await visit(browser, site, v));
  const summary = {
    scenario: 'posthog',
    orrery: ORRERY,
    tap: USE_TAP,
    site: site.origin,
    token: TOKEN,
    user: USER,
    email: EMAIL,
    visitors,
  };
  const problems = visitors.flatMap((v) => v.problems.map((p) => `${v.visitor}: ${p}`));
  if (problems.length > 0) {
    const err = new Error(`posthog-js met ${problems.length} problem(s): ${problems.join(' | ')}`);
    err.summary = summary;
    throw err;
  }
  return summary;
});
