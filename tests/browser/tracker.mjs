// Orrery's own tracker (sdk/js), loaded by a script tag from Orrery itself
// (/sdk/tracker.js, with its SRI hash and crossorigin, as the README says)
// on pages of another origin, sending through a tap (a recording proxy in
// front of Orrery, which sees what a closing tab sends).
//
// Visitor "shop" (batches held until flushed, so each step is one request):
//   the page view at load; its first request answered 503 with Retry-After
//   by the tap (the tracker must retry it, and the event be stored once);
//   SPA navigation: pushState, replaceState to the same URL (no page view),
//   a hash change, history.back() (popstate); a custom event; identify, an
//   event as the user, reset, an event as a new anonymous visitor; an
//   outbound link and a file download (tracked, navigation prevented by the
//   page); no cookie set; then an event queued and the tab closed: it must
//   arrive by sendBeacon.
// Visitor "dnt": Do Not Track on: nothing may be sent.
// Visitor "gpc": Global Privacy Control on, but the page says
//   data-respect-dnt="false": sent; then optOut (nothing), optIn (sent).
//
// Env: ORRERY_URL, ORRERY_KEY (a public key), ORRERY_SCREENSHOTS (optional).
// Prints one JSON line per harness.runScenario: per visitor the events sent
// (decoded bodies, in order), the requests, ids seen in storage, problems.

import fs from 'node:fs';
import path from 'node:path';

import { HERE, check, decodeBody, launchBrowser, log, openPage, orreryUrl, requireEnv, runScenario, serveSite, startTap } from './harness.mjs';

const ORRERY = orreryUrl();
const KEY = requireEnv('ORRERY_KEY');
const SRI = fs.readFileSync(path.join(HERE, '../../sdk/js/dist/tracker.min.js.sri'), 'utf8').trim();

const page = (title, api, attrs = '') => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<style>body{font:15px/1.4 system-ui,sans-serif;margin:2rem;color:#222} li{font:12px monospace}</style>
<script defer src="${ORRERY}/sdk/tracker.js" integrity="${SRI}" crossorigin="anonymous"
  data-key="${KEY}" data-api="${api}" ${attrs}></script>
</head><body>
<h1>${title}</h1>
<p>Orrery's tracker from <code>${ORRERY}/sdk/tracker.js</code> (integrity ${SRI.slice(0, 20)}…), sending to <code>${api}</code>.</p>
<p><a id="out" href="https://elsewhere.example/pricing">Elsewhere</a> · <a id="pdf" href="/files/report.pdf">Report (PDF)</a></p>
<ol id="log"></ol>
<script>
  // The page keeps its visitor here: the links are tracked, not followed.
  for (const a of document.querySelectorAll('a')) a.addEventListener('click', (e) => e.preventDefault());
</script>
</body></html>`;

/** Every event in the bodies a recorder saw, in order. */
const eventsOf = (rec) =>
  rec
    .matching({ method: 'POST', path: '/api/v1/events' })
    .flatMap((r) => (decodeBody(r).json?.batch ?? []).map((e) => ({ ...e, status: r.status, seq: r.seq })));

await runScenario(async (cleanup) => {
  let failedFirst = false;
  const tap = await startTap(ORRERY, {
    name: 'tap',
    // The first batch is refused as an overloaded server would.
    answer: (r) => {
      if (r.method === 'POST' && !failedFirst) {
        failedFirst = true;
        return { status: 503, headers: { 'retry-after': '1', 'content-type': 'application/json', 'access-control-allow-origin': '*', 'access-control-expose-headers': 'retry-after' }, body: '{"code":"queue_full","message":"retry"}' };
      }
      return undefined;
    },
  });
  cleanup(() => tap.close());
  const quiet = await startTap(ORRERY, { name: 'quiet' });
  cleanup(() => quiet.close());
  const held = 'data-flush-interval="600000" data-batch-size="100" data-outbound data-downloads';
  const site = await serveSite({
    pages: {
      '/shop/': page('Shop', tap.url, held),
      '/dnt/': page('Do Not Track', quiet.url, 'data-flush-interval="100"'),
      '/gpc/': page('Global Privacy Control', tap.url, 'data-flush-interval="100" data-respect-dnt="false"'),
    },
  });
  cleanup(() => site.close());
  const browser = await launchBrowser();
  cleanup(() => browser.close());

  // --- shop
  const shop = await openPage(browser, site.url('/shop/'), { name: 'tracker-shop', watch: [tap.url, ORRERY] });
  await shop.page.waitForFunction(() => window.orrery);
  const sent = () => tap.matching({ method: 'POST', path: '/api/v1/events' }).filter((r) => r.status === 200).length;
  const flush = async (what) => {
    const before = sent();
    await shop.evaluate(() => window.orrery.flush());
    await tap.until(() => sent() > before, { what, timeout: 20000 });
  };
  const anon1 = await shop.evaluate(() => sessionStorage.getItem('orrery_anon'));
  const session1 = await shop.evaluate(() => sessionStorage.getItem('orrery_sid'));
  // The page view at load: the tap refuses it once (503, Retry-After: 1).
  await flush('the page view, retried after the 503');
  await shop.evaluate(() => {
    history.pushState({}, '', '/shop/item/1');
    history.replaceState({ same: true }, '', '/shop/item/1');
  });
  await shop.evaluate(() => {
    location.hash = 'reviews';
  });
  await shop.page.waitForFunction(() => location.hash === '#reviews');
  await shop.page.waitForTimeout(100);
  await shop.evaluate(() => history.back());
  await shop.page.waitForFunction(() => location.hash === '');
  await shop.page.waitForTimeout(100);
  await flush('the SPA page views');
  await shop.evaluate(() => window.orrery.track('add_to_cart', { sku: 'A1', qty: 2 }));
  await shop.evaluate(() => window.orrery.identify('user-42', { plan: 'pro' }));
  await shop.evaluate(() => window.orrery.track('after_identify'));
  await shop.evaluate(() => window.orrery.reset());
  await shop.evaluate(() => window.orrery.track('after_reset'));
  const anon2 = await shop.evaluate(() => sessionStorage.getItem('orrery_anon'));
  const session2 = await shop.evaluate(() => sessionStorage.getItem('orrery_sid'));
  await shop.page.click('#out');
  await shop.page.click('#pdf');
  await tap.waitForIdle({ quietMs: 500 });
  const cookies = { document: await shop.evaluate(() => document.cookie), jar: (await shop.context.cookies()).length };
  check(cookies.document === '' && cookies.jar === 0, `the tracker set a cookie: ${JSON.stringify(cookies)}`);
  await shop.evaluate(() => {
    document.getElementById('log').innerHTML = ['pageview ×4', 'add_to_cart', 'identify user-42', 'after_identify', 'reset', 'after_reset', 'outbound_link', 'file_download', 'last_words (at close)']
      .map((t) => `<li>${t}</li>`)
      .join('');
  });
  await shop.showRequests(tap);
  const shopShot = await shop.screenshot('tracker-shop');
  const beforeClose = tap.requests.length;
  await shop.evaluate(() => window.orrery.track('last_words'));
  await shop.close({ runBeforeUnload: true, graceMs: 1500 });
  await tap.until(() => eventsOf(tap).some((e) => e.event === 'last_words' && e.status === 200), { what: 'the beacon sent at close', timeout: 10000 });
  const beacon = tap.requests.slice(beforeClose).find((r) => (decodeBody(r).json?.batch ?? []).some((e) => e.event === 'last_words'));

  // --- dnt
  const dnt = await openPage(browser, site.url('/dnt/'), {
    name: 'tracker-dnt',
    watch: [quiet.url],
    init: () => Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1' }),
  });
  await dnt.page.waitForFunction(() => window.orrery);
  await dnt.evaluate(() => window.orrery.track('should_not_leave'));
  await dnt.page.waitForTimeout(1500);
  await dnt.screenshot('tracker-dnt');
  await dnt.close({ graceMs: 500 });
  check(quiet.requests.length === 0, `with Do Not Track, the tracker sent ${quiet.requests.length} request(s)`);

  // --- gpc
  const before = eventsOf(tap).length;
  const gpc = await openPage(browser, site.url('/gpc/'), {
    name: 'tracker-gpc',
    watch: [tap.url],
    init: () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }),
  });
  await gpc.page.waitForFunction(() => window.orrery);
  // Its page view first: opting out drops what is still queued.
  await tap.until(() => eventsOf(tap).some((e) => e.event === 'pageview' && e.url.includes('/gpc/') && e.status === 200), {
    what: 'the GPC page view',
  });
  await gpc.evaluate(() => window.orrery.optOut());
  await gpc.evaluate(() => window.orrery.track('while_opted_out'));
  await gpc.page.waitForTimeout(500);
  await gpc.evaluate(() => window.orrery.optIn());
  await gpc.evaluate(() => window.orrery.track('after_opt_in'));
  await tap.until(() => eventsOf(tap).some((e) => e.event === 'after_opt_in' && e.status === 200), { what: 'after_opt_in' });
  await gpc.screenshot('tracker-gpc');
  await gpc.close({ graceMs: 300 });
  const gpcEvents = eventsOf(tap).slice(before).map((e) => e.event);

  // Chromium logs the 503 the tap answered on purpose; nothing else may
  // go wrong.
  const problems = [...shop.errors(), ...dnt.errors(), ...gpc.errors()].filter((p) => !p.includes('status of 503'));
  check(problems.length === 0, `page errors: ${problems.join(' | ')}`);
  const events = eventsOf(tap);
  for (const e of events) log(`  ${e.seq} ${e.status} ${e.event} ${e.url} ${e.distinct_id}`);
  return {
    scenario: 'tracker',
    site: site.origin,
    anon1,
    anon2,
    session1,
    session2,
    cookies,
    events,
    gpc_events: gpcEvents,
    beacon: beacon ? { contentType: beacon.contentType, status: beacon.status, afterClose: beacon.seq >= beforeClose } : null,
    requests: tap.brief(),
    screenshots: [shopShot, ...dnt.screenshots, ...gpc.screenshots],
  };
});
