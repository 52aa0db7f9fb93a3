// The real plausible-tracker package in a real page in headless Chromium,
// sending straight to Orrery (`apiHost`): the page imports the package's ES
// module build as a bundler would (`import Plausible from
// 'plausible-tracker'`), the visitor comes from the site's home page
// through a link (so there is a referrer), the page sends its pageview,
// then the visitor clicks "Sign up" (`trackEvent('Signup', {props: {plan:
// 'pro'}})`).
//
// The page is on 127.0.0.1, which plausible-tracker ignores unless
// `trackLocalhost: true`; the domain it reports is `site.example`, mapped to
// a project by Orrery's `compat.plausible_domains`.
//
// Env: ORRERY_URL, ORRERY_PLAUSIBLE_DOMAIN (default site.example),
// ORRERY_SCREENSHOTS (optional).
// Prints one JSON line: the page URL and its referrer, the bodies sent
// (decoded), the requests (path, content type, answer) and the problems
// seen (answers outside 2xx, failed requests, console errors). Exits 1 when
// there is a problem.

import { decodeBody, importMap, launchBrowser, log, openPage, orreryUrl, runScenario, serveSite } from './harness.mjs';

const ORRERY = orreryUrl();
const DOMAIN = process.env.ORRERY_PLAUSIBLE_DOMAIN || 'site.example';
const PATH = '/blog/hello.html';

const STYLE = `<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
  button { font-size: 1rem; padding: .4rem 1rem; }
  li { font: 13px monospace; }
  #status { margin-top: 1rem; font-weight: 600; }
</style>`;

const HOME = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Home</title>${STYLE}</head>
<body><h1>Home</h1><p><a id="to-post" href="${PATH}?visitor=plausible">Read the post</a></p></body></html>`;

const POST = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Hello (plausible-tracker)</title>
${STYLE}
${importMap({ 'plausible-tracker': '/node_modules/plausible-tracker/build/module/index.js' })}
</head>
<body>
<h1>Hello</h1>
<p>plausible-tracker (import 'plausible-tracker', build/module), domain <code>${DOMAIN}</code>, apiHost <code>${ORRERY}</code>.</p>
<button id="signup">Sign up</button>
<div id="status">loading plausible-tracker…</div>
<ol id="sent"></ol>
<script type="module">
  import Plausible from 'plausible-tracker';
  const list = document.getElementById('sent');
  const done = (what) => () => {
    const li = document.createElement('li');
    li.textContent = what + ' sent';
    list.appendChild(li);
    window.__done.push(what);
  };
  window.__done = [];
  const { trackPageview, trackEvent } = Plausible({
    domain: ${JSON.stringify(DOMAIN)},
    apiHost: ${JSON.stringify(ORRERY)},
    trackLocalhost: true,
  });
  trackPageview({}, { callback: done('pageview') });
  document.getElementById('signup').addEventListener('click', () => {
    trackEvent('Signup', { props: { plan: 'pro' }, callback: done('Signup') });
  });
  document.getElementById('status').textContent = 'plausible-tracker loaded';
</script>
</body>
</html>`;

await runScenario(async (cleanup) => {
  const site = await serveSite({ pages: { '/': HOME, [PATH]: POST } });
  cleanup(() => site.close());
  const browser = await launchBrowser();
  cleanup(() => browser.close());
  const tab = await openPage(browser, site.url('/'), { name: 'plausible' });
  await Promise.all([tab.page.waitForURL(`**${PATH}?*`, { waitUntil: 'load' }), tab.page.click('#to-post')]);
  const url = tab.page.url();
  const referrer = await tab.evaluate(() => document.referrer);
  await tab.waitForRequests(1, { method: 'POST', path: '/api/event' });
  await tab.page.click('#signup');
  await tab.waitForRequests(2, { method: 'POST', path: '/api/event' });
  await tab.until(() => tab.evaluate(() => window.__done.length >= 2), { what: 'the tracker callbacks' });
  await tab.waitForIdle({ quietMs: 300 });
  await tab.showRequests();
  const screenshot = await tab.screenshot('plausible');
  await tab.close({ runBeforeUnload: true });
  const sent = tab.matching({ path: '/api/event' }).map((r) => ({
    ...decodeBody(r).json,
    contentType: r.contentType,
    status: r.status,
  }));
  const requests = tab.brief();
  const problems = [...tab.failures(), ...tab.errors()];
  log(`plausible: ${url} (referrer ${referrer || 'none'})`);
  for (const r of requests) log(`  ${r.method} ${r.path} ${r.contentType ?? '-'} ${r.encoding} -> ${r.failure ?? r.status}`);
  for (const p of problems) log(`  problem: ${p}`);
  const summary = { scenario: 'plausible', orrery: ORRERY, site: site.origin, domain: DOMAIN, url, referrer, sent, requests, problems, screenshot };
  if (problems.length > 0) {
    const err = new Error(`plausible-tracker met ${problems.length} problem(s): ${problems.join(' | ')}`);
    err.summary = summary;
    throw err;
  }
  return summary;
});
