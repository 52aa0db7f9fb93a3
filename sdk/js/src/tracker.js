// The Orrery browser tracker: page views (SPA navigation included), custom
// events, identify/reset, batching with retry, a last flush by sendBeacon
// when the tab goes away, opt-out, and Do Not Track / Global Privacy
// Control respected. No cookies: the anonymous id lives in sessionStorage
// (or in memory). Zero dependencies; built by build.mjs into
// dist/tracker.min.js (script tag, auto-init) and dist/tracker.mjs (ES
// module), kept under 2 KB gzipped.

const W = window;
const D = document;
const N = navigator;
const P = 'orrery_';
// A session ends after 30 minutes without an event.
const IDLE = 18e5;
const FILES =
  /\.(pdf|xlsx?|docx?|pptx?|odt|ods|csv|txt|rtf|zip|rar|7z|gz|tgz|dmg|exe|msi|pkg|deb|rpm|iso|apk|mp3|wav|mp4|mov|avi|mkv|webm)$/i;

// A time-ordered UUIDv7: 48 bits of milliseconds, then random bits, so a
// retried event keeps its id and ids stay append-friendly in the index.
// Random bytes are drawn 64 ids at a time (a getRandomValues call costs
// more than the rest of an event).
const HEX = [...Array(256)].map((_, i) => (i + 256).toString(16).slice(1));
let pool;
let used = 1024;
const uuid7 = () => {
  if (used > 1008) {
    pool = crypto.getRandomValues(new Uint8Array(1024));
    used = 0;
  }
  const b = pool.subarray(used, (used += 16));
  for (let i = 5, t = Date.now(); i >= 0; i--, t = Math.floor(t / 256)) b[i] = t % 256;
  b[6] = (b[6] & 15) | 112;
  b[8] = (b[8] & 63) | 128;
  let h = '';
  for (let i = 0; i < 16; i++) h += HEX[b[i]] + (i > 2 && i < 10 && i % 2 ? '-' : '');
  return h;
};

// sessionStorage when it works (and was not declined), else memory only.
// Reads come from memory (sessionStorage calls cost microseconds each);
// writes go to both.
const storage = (kind) => {
  const mem = {};
  let s;
  try {
    s = kind != 'memory' && W.sessionStorage;
    if (s) s.setItem(P, 1);
  } catch (e) {
    s = 0;
  }
  return [
    (k) => (k in mem ? mem[k] : (mem[k] = s ? s.getItem(P + k) : null)),
    (k, v) => {
      mem[k] = v;
      try {
        if (s) v == null ? s.removeItem(P + k) : s.setItem(P + k, v);
      } catch (e) {}
    },
  ];
};

// The opt-out is a preference, not an identifier: kept in localStorage.
const flag = (v) => {
  try {
    if (v == null) return localStorage.getItem(P + 'optout');
    v ? localStorage.setItem(P + 'optout', 1) : localStorage.removeItem(P + 'optout');
  } catch (e) {}
};

export function init(o) {
  const url = (o.api || '').replace(/\/$/, '') + '/api/v1/events';
  const size = o.batchSize || 10;
  const wait = o.flushInterval || 2000;
  const [get, set] = storage(o.storage);
  const blocked = o.respectDnt !== false && (N.doNotTrack == '1' || W.doNotTrack == '1' || N.globalPrivacyControl);
  let queue = [];
  let timer = 0;
  let busy = 0;
  let tries = 0;
  let last;

  const id = (k) => get(k) || (set(k, uuid7()), get(k));
  // The time of the last event is written at most every 10 s (a session
  // ends 30 minutes, give or take 10 s, after it).
  const session = () => {
    const now = Date.now();
    const seen = +get('seen') || 0;
    if (now - seen > IDLE) set('sid', null);
    if (now - seen > 1e4) set('seen', now);
    return id('sid');
  };
  const body = (events) => JSON.stringify({ api_key: o.key, batch: events });
  const later = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(flush, ms);
  };

  // Sends what is queued. A network error, a 5xx or a 429 puts the batch
  // back and retries after 1, 2, 4... s (at most a minute), or after
  // Retry-After. `beacon`: the page is going away, so send everything
  // by sendBeacon (as text/plain, which needs no CORS preflight).
  function flush(beacon) {
    clearTimeout(timer);
    timer = 0;
    if (!queue.length) return Promise.resolve();
    if (beacon === true) {
      const all = body(queue.splice(0));
      if (!(N.sendBeacon && N.sendBeacon(url, all))) fetch(url, { method: 'POST', body: all, keepalive: true }).catch(() => {});
      return Promise.resolve();
    }
    if (busy) return busy;
    const batch = queue.splice(0, 100);
    return (busy = fetch(url, { method: 'POST', body: body(batch), keepalive: true })
      .then((r) => {
        if (r.status > 499 || r.status == 429) throw r;
        tries = 0;
      })
      .catch((r) => {
        // Keep at most 500 events while the server cannot be reached.
        queue = batch.concat(queue).slice(-500);
        const after = r && r.headers && +r.headers.get('Retry-After');
        later(after ? after * 1e3 : Math.min(1e3 * 2 ** tries++, 6e4));
      })
      .finally(() => {
        busy = 0;
        if (queue.length && !timer) later(0);
      }));
  }

  function track(event, properties) {
    if (blocked || flag()) return;
    queue.push({
      event,
      id: uuid7(),
      distinct_id: get('uid') || id('anon'),
      session_id: session(),
      timestamp: Date.now(),
      url: location.href,
      referrer: D.referrer || undefined,
      properties,
    });
    if (queue.length >= size) flush();
    else if (!timer) later(wait);
  }

  // One page view per URL: replaceState to the same address is none.
  const page = () => {
    if (location.href != last) {
      last = location.href;
      track('pageview');
    }
  };

  if (o.spa !== false) {
    for (const m of ['pushState', 'replaceState']) {
      const f = history[m];
      history[m] = function () {
        const r = f.apply(this, arguments);
        page();
        return r;
      };
    }
    W.addEventListener('popstate', page);
    W.addEventListener('hashchange', page);
  }
  const leave = () => flush(true);
  W.addEventListener('pagehide', leave);
  D.addEventListener('visibilitychange', () => D.visibilityState == 'hidden' && leave());
  if (o.outbound || o.downloads)
    D.addEventListener(
      'click',
      (e) => {
        const a = e.target.closest && e.target.closest('a[href]');
        if (!a) return;
        if (o.downloads && FILES.test(a.pathname)) track('file_download', { url: a.href });
        else if (o.outbound && a.host && a.host != location.host) track('outbound_link', { url: a.href });
        else return;
        leave();
      },
      true,
    );
  if (o.auto !== false) page();

  return {
    track,
    page,
    identify(uid, properties) {
      const anon = id('anon');
      set('uid', uid);
      track('identify', { ...properties, anonymous_id: anon });
    },
    reset() {
      for (const k of ['uid', 'anon', 'sid']) set(k, null);
    },
    flush,
    optOut() {
      flag(1);
      queue = [];
    },
    optIn() {
      flag(0);
    },
  };
}
