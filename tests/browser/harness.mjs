// A small harness for running real JavaScript trackers in a real page in
// headless Chromium against a real Orrery.
//
// - serveSite(): a static HTTP server on 127.0.0.1:0 (node:http) serving
//   pages given as strings by path, extra files, and tests/browser/node_modules
//   under /node_modules/ (so a page loads the trackers exactly as published).
//   The page's origin is not Orrery's: every request to Orrery is
//   cross-origin, as from a real site.
// - launchBrowser(): Debian's Chromium through playwright-core, headless,
//   looking like a person's browser to bot filters.
// - openPage(): a page in its own browser context (its own cookies and
//   storage, i.e. a new visitor), a TrackedPage: it records every request to
//   the watched origins (method, URL, content type, body, answer), the
//   console errors and the uncaught exceptions; wait for requests or for
//   the network to go quiet, list the requests in the page, screenshot,
//   close (with the unload handlers, to test unload flushes).
// - startTap(): a recording proxy in front of Orrery, for what a page sends
//   while its tab closes (Playwright does not report all of it), or to
//   answer some requests in its place.
// - decodeBody(): what a tracker sent, decoded (JSON, gzip, base64 form).
// - runScenario(): the common main of a scenario script: prints one JSON
//   line on stdout (the summary, or the error) and exits non-zero on
//   failure; everything else goes to stderr.
//
// Environment:
//   ORRERY_URL           Orrery's base URL (required by the scenarios)
//   ORRERY_CHROMIUM      the browser binary (default /usr/bin/chromium)
//   ORRERY_SCREENSHOTS   where screenshots go (default a new temp directory)
//   ORRERY_BROWSER_TIMEOUT_MS  the whole scenario's time limit (default 90000)

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** tests/browser. */
export const HERE = path.dirname(fileURLToPath(import.meta.url));
/** tests/browser/node_modules, served under /node_modules/. */
export const NODE_MODULES = path.join(HERE, 'node_modules');

const T0 = Date.now();

/** Writes a line to stderr, after the seconds since the start (stdout is
 * kept for the one summary line). */
export function log(...args) {
  const t = ((Date.now() - T0) / 1000).toFixed(2).padStart(6);
  process.stderr.write(`[${t}s] ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`);
}

/** The value of environment variable `name`; throws when it is unset. */
export function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

/** Orrery's base URL, from ORRERY_URL, without a trailing slash. */
export function orreryUrl() {
  return requireEnv('ORRERY_URL').replace(/\/+$/, '');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// The site: a static server.

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.cjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
};

function typeOf(file) {
  return TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

/** A file under `root` for the URL path `rel`, resolved as a bundler or
 * Node would resolve a relative import: the file, else `.js`/`.mjs` added,
 * else `index.js` in the directory (packages such as plausible-tracker
 * publish ES modules importing `./lib/tracker` without the extension).
 * Never outside `root`. */
function resolveUnder(root, rel) {
  const base = path.resolve(root, `.${path.sep}${rel}`);
  if (base !== root && !base.startsWith(root + path.sep)) return undefined;
  for (const candidate of [base, `${base}.js`, `${base}.mjs`, path.join(base, 'index.js')]) {
    try {
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/**
 * Starts the site on `host:0` (default 127.0.0.1).
 *
 * @param {object} opts
 * @param {Record<string, string | {body: string|Buffer, type?: string, status?: number, headers?: object}>} [opts.pages]
 *   responses by URL path, e.g. `{'/': '<!doctype html>...'}` (a string is HTML)
 * @param {Record<string, string>} [opts.files] URL path -> file on disk
 * @param {Record<string, string>} [opts.dirs] URL path prefix -> directory,
 *   e.g. `{'/dist/': '/work/tracker/dist'}`; `/node_modules/` is always there
 * @returns {Promise<{origin: string, url: (p: string) => string, log: object[], setPage: Function, close: () => Promise<void>}>}
 */
export async function serveSite({ pages = {}, files = {}, dirs = {}, host = '127.0.0.1' } = {}) {
  const table = { ...pages };
  const roots = Object.entries({ '/node_modules/': NODE_MODULES, ...dirs }).map(([prefix, dir]) => [
    prefix.endsWith('/') ? prefix : `${prefix}/`,
    path.resolve(dir),
  ]);
  const served = [];
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://site');
    const send = (status, type, body, headers = {}) => {
      served.push({ method: req.method, path: pathname, status });
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const page = table[pathname];
    if (page !== undefined) {
      const p = typeof page === 'string' ? { body: page } : page;
      return send(p.status ?? 200, p.type ?? TYPES['.html'], p.body, p.headers);
    }
    if (files[pathname]) {
      return send(200, typeOf(files[pathname]), fs.readFileSync(files[pathname]));
    }
    for (const [prefix, dir] of roots) {
      if (pathname.startsWith(prefix)) {
        let rel;
        try {
          rel = decodeURIComponent(pathname.slice(prefix.length));
        } catch {
          return send(400, 'text/plain', 'bad path\n');
        }
        const file = resolveUnder(dir, rel);
        if (file) return send(200, typeOf(file), fs.readFileSync(file));
      }
    }
    if (pathname === '/favicon.ico') return send(204, 'image/x-icon', '');
    return send(404, 'text/plain', `not found: ${pathname}\n`);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const origin = `http://${host}:${server.address().port}`;
  log(`site serving on ${origin}`);
  return {
    origin,
    url: (p) => new URL(p, origin).href,
    /** Every request the site answered: {method, path, status}. */
    log: served,
    /** Adds or replaces a page. */
    setPage: (p, body) => {
      table[p] = body;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** `<script type="importmap">` for bare imports, e.g.
 * `{'posthog-js': '/node_modules/posthog-js/dist/module.mjs'}`. */
export function importMap(imports) {
  return `<script type="importmap">${JSON.stringify({ imports })}</script>`;
}

// ---------------------------------------------------------------------------
// The browser.

/**
 * Launches Chromium headless. `navigator.webdriver` is false (the blink
 * feature AutomationControlled is off) and each page gets the user agent of
 * the same Chromium as a person runs it (`Chrome/N`, not `HeadlessChrome/N`):
 * trackers that drop bots (posthog-js does) treat the page as a visitor's,
 * with their default settings.
 */
export async function launchBrowser({ executablePath, args = [], headless = true } = {}) {
  const exe = executablePath ?? process.env.ORRERY_CHROMIUM ?? '/usr/bin/chromium';
  const browser = await chromium.launch({
    executablePath: exe,
    headless,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-blink-features=AutomationControlled', ...args],
  });
  log(`browser: ${exe} ${browser.version()}`);
  return browser;
}

/** The user agent of this Chromium when a person runs it. */
export function visitorUserAgent(browser) {
  const major = browser.version().split('.')[0];
  return `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${major}.0.0.0 Safari/537.36`;
}

let shotsDir;
/** The screenshot directory: $ORRERY_SCREENSHOTS (created), or a new
 * temporary directory. */
export function screenshotDir() {
  if (!shotsDir) {
    const wanted = process.env.ORRERY_SCREENSHOTS;
    if (wanted) {
      fs.mkdirSync(wanted, { recursive: true });
      shotsDir = path.resolve(wanted);
    } else {
      shotsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'orrery-screenshots-'));
    }
  }
  return shotsDir;
}

/**
 * What was sent to one HTTP service, request by request: `requests` holds
 * `{seq, method, url, path, query, contentType, body (Buffer|null), at,
 * status, responseHeaders, responseBody, failure, settled}`.
 */
export class Recorder {
  constructor(name) {
    this.name = name;
    this.requests = [];
  }

  /** The requests matching `match` ({method, path: string|RegExp} or a
   * function). */
  matching(match = {}) {
    if (typeof match === 'function') return this.requests.filter(match);
    return this.requests.filter(
      (r) =>
        (!match.method || r.method === match.method) &&
        (!match.path || (match.path instanceof RegExp ? match.path.test(r.path) : r.path === match.path)),
    );
  }

  /** Waits until `predicate()` is truthy (polled every 50 ms); answers its
   * value; throws after `timeout` ms naming `what`. */
  async until(predicate, { timeout = 15000, what = 'condition' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const v = await predicate();
      if (v) return v;
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: timed out after ${timeout} ms waiting for ${what}; requests so far: ${JSON.stringify(this.brief())}`);
      }
      await sleep(50);
    }
  }

  /** Waits until at least `n` requests matching `match` have an answer (or
   * failed); answers them. */
  async waitForRequests(n, match = {}, { timeout = 15000 } = {}) {
    return this.until(
      () => {
        const done = this.matching(match).filter((r) => r.settled);
        return done.length >= n ? done : null;
      },
      { timeout, what: `${n} finished request(s) to ${typeof match === 'function' ? 'predicate' : JSON.stringify(match)}` },
    );
  }

  /** Waits until no request is in flight and none has started for
   * `quietMs`. */
  async waitForIdle({ quietMs = 750, timeout = 15000 } = {}) {
    let last = -1;
    let since = Date.now();
    await this.until(
      () => {
        const inFlight = this.requests.some((r) => !r.settled);
        if (this.requests.length !== last || inFlight) {
          last = this.requests.length;
          since = Date.now();
          return false;
        }
        return Date.now() - since >= quietMs;
      },
      { timeout, what: 'the network to go quiet' },
    );
  }

  /** The requests that failed or were answered outside 2xx, as text. */
  failures() {
    return this.requests
      .filter((r) => r.failure || (r.status !== null && (r.status < 200 || r.status > 299)))
      .map((r) => `${r.method} ${r.path}${r.url.includes('?') ? `?${r.url.split('?')[1]}` : ''} -> ${r.failure ?? r.status} ${r.responseBody ?? ''}`.trim());
  }

  /** The requests in short: method, path, query, content type, how the
   * body was encoded, the number of items (events) in it, the answer. */
  brief() {
    return this.requests.map((r) => {
      const decoded = decodeBody(r);
      const j = decoded.json;
      return {
        method: r.method,
        path: r.path,
        query: r.query,
        ...(r.resourceType ? { type: r.resourceType } : {}),
        contentType: r.contentType,
        encoding: decoded.encoding,
        bytes: r.body ? r.body.length : 0,
        items: Array.isArray(j) ? j.length : Array.isArray(j?.batch) ? j.batch.length : j ? 1 : 0,
        status: r.status,
        failure: r.failure,
      };
    });
  }
}

/**
 * A recording reverse proxy in front of `target` (e.g. Orrery): the page is
 * given the tap's URL in place of the target's, and every request is
 * forwarded as it came (method, path, headers but `Host`, body) and answered
 * with the target's answer as it came (status, headers, body). It sees what
 * the page cannot report itself: what the browser sends while or after a
 * tab closes (sendBeacon, keepalive fetch). `answer(record)` may answer a
 * request itself instead (`{status, headers, body}`; undefined forwards
 * it), e.g. to fail one on purpose or to try an answer the target does not
 * give yet; unlike Playwright's routing, it does not hold up what a closing
 * tab sends. Answers a Recorder with `url` and `close()`.
 */
export async function startTap(target, { name = 'tap', host = '127.0.0.1', answer } = {}) {
  const to = new URL(target);
  const rec = new Recorder(name);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, to);
      const record = {
        seq: rec.requests.length,
        method: req.method,
        url: url.href,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        contentType: req.headers['content-type'] ?? null,
        requestHeaders: req.headers,
        body: body.length ? body : null,
        at: Date.now(),
        status: null,
        failure: null,
        settled: false,
      };
      rec.requests.push(record);
      const own = answer?.(record);
      if (own) {
        const payload = Buffer.from(own.body ?? '');
        record.status = own.status ?? 200;
        record.responseHeaders = own.headers ?? {};
        record.responseBody = payload.toString('utf8');
        record.answeredByTap = true;
        record.settled = true;
        res.writeHead(record.status, record.responseHeaders);
        res.end(payload);
        return;
      }
      const up = http.request(
        { hostname: to.hostname, port: to.port, method: req.method, path: req.url, headers: { ...req.headers, host: to.host } },
        (upstream) => {
          const out = [];
          upstream.on('data', (c) => out.push(c));
          upstream.on('end', () => {
            const payload = Buffer.concat(out);
            record.status = upstream.statusCode;
            record.responseHeaders = upstream.headers;
            record.responseBody = payload.toString('utf8');
            record.settled = true;
            res.writeHead(upstream.statusCode, upstream.rawHeaders);
            res.end(payload);
          });
        },
      );
      up.on('error', (e) => {
        record.failure = `tap: ${e.message}`;
        record.settled = true;
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(e.message);
      });
      up.end(body);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  rec.url = `http://${host}:${server.address().port}`;
  rec.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
  log(`${name}: ${rec.url} -> ${to.origin}`);
  return rec;
}

/**
 * A page in a fresh browser context, recording what it sends to `watch`
 * (an origin or a list of them, e.g. Orrery's URL), its console and its
 * uncaught exceptions. Requests the browser sends while or after the tab
 * closes may not be reported here: put a tap (startTap) in front of the
 * service to see those.
 */
export class TrackedPage extends Recorder {
  constructor(context, page, watch, name) {
    super(name);
    this.context = context;
    this.page = page;
    this.watch = watch.map((w) => new URL(w).origin);
    /** Every console message: {type, text, location}. */
    this.console = [];
    /** Uncaught exceptions in the page. */
    this.pageErrors = [];
    /** Requests the page made that failed (any origin). */
    this.failed = [];
    this.screenshots = [];
    this.closed = false;
    const byRequest = new Map();
    context.on('request', (request) => {
      let url;
      try {
        url = new URL(request.url());
      } catch {
        return;
      }
      if (!this.watch.includes(url.origin)) return;
      const record = {
        seq: this.requests.length,
        method: request.method(),
        url: url.href,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        resourceType: request.resourceType(),
        contentType: request.headers()['content-type'] ?? null,
        body: request.postDataBuffer() ?? null,
        at: Date.now(),
        status: null,
        failure: null,
        settled: false,
      };
      byRequest.set(request, record);
      this.requests.push(record);
    });
    context.on('requestfinished', async (request) => {
      const record = byRequest.get(request);
      if (!record) return;
      try {
        const response = await request.response();
        record.status = response ? response.status() : null;
        record.responseHeaders = response ? await response.allHeaders() : {};
        try {
          record.responseBody = response ? (await response.body()).toString('utf8') : null;
        } catch {
          record.responseBody = null; // e.g. a beacon whose page is gone
        }
      } catch (e) {
        record.failure = `no response: ${e.message}`;
      }
      record.settled = true;
    });
    context.on('requestfailed', (request) => {
      const failure = request.failure()?.errorText ?? 'failed';
      this.failed.push({ url: request.url(), failure });
      const record = byRequest.get(request);
      if (!record) return;
      record.failure = failure;
      record.settled = true;
    });
    page.on('console', (msg) => {
      const loc = msg.location();
      this.console.push({ type: msg.type(), text: msg.text(), location: loc?.url ? `${loc.url}:${loc.lineNumber}` : '' });
    });
    page.on('pageerror', (err) => this.pageErrors.push(String(err?.stack ?? err)));
  }

  /** Console errors and uncaught exceptions, as text. */
  errors() {
    return [
      ...this.console.filter((m) => m.type === 'error').map((m) => `console.error: ${m.text} ${m.location}`.trim()),
      ...this.pageErrors.map((e) => `uncaught: ${e}`),
    ];
  }

  /** Adds a panel at the end of the page listing the requests of `recorder`
   * (default this page's) with their answers, for the screenshot. */
  async showRequests(recorder = this, title = `Requests to ${recorder.url ?? this.watch.join(', ')}`) {
    const lines = recorder.brief().map(
      (r) =>
        `${r.method} ${r.path}${Object.keys(r.query).length ? `?${new URLSearchParams(r.query)}` : ''}` +
        `${r.contentType ? `  [${r.contentType}, ${r.encoding}${r.items ? `, ${r.items} item(s)` : ''}]` : ''}  -> ${r.failure ?? r.status ?? 'pending'}`,
    );
    await this.page.evaluate(
      ({ title, lines }) => {
        document.getElementById('__harness_requests')?.remove();
        const box = document.createElement('section');
        box.id = '__harness_requests';
        box.style.cssText = 'margin-top:1.5rem;padding:.5rem 1rem;border:2px dashed #888;background:#f6f6f6;font:12px monospace;white-space:pre';
        box.textContent = `${title} (added by the test harness)\n${lines.join('\n')}`;
        document.body.appendChild(box);
      },
      { title, lines },
    );
  }

  /** A full-page screenshot `<dir>/<name>.png`; prints and answers the path. */
  async screenshot(name = this.name) {
    const file = path.join(screenshotDir(), `${name.replace(/[^A-Za-z0-9._-]+/g, '_')}.png`);
    await this.page.screenshot({ path: file, fullPage: true });
    log(`screenshot: ${file}`);
    this.screenshots.push(file);
    return file;
  }

  /** `page.evaluate`. */
  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  /**
   * Closes the tab as a person does, running the `beforeunload`/`pagehide`
   * handlers when `runBeforeUnload` (the default), then waits up to
   * `settleMs` for the requests in flight, and at least `graceMs` for those
   * it cannot see (a beacon sent while closing), and closes the context
   * (which would cancel them).
   */
  async close({ runBeforeUnload = true, settleMs = 1500, graceMs = 500 } = {}) {
    if (this.closed) return;
    this.closed = true;
    const closedPage = new Promise((resolve) => this.page.once('close', resolve));
    await this.page.close({ runBeforeUnload });
    let t;
    await Promise.race([closedPage, new Promise((resolve) => (t = setTimeout(resolve, 5000)))]);
    clearTimeout(t);
    const started = Date.now();
    while (Date.now() - started < settleMs && this.requests.some((r) => !r.settled)) await sleep(50);
    await sleep(Math.max(0, graceMs - (Date.now() - started)));
    await this.context.close();
  }
}

/**
 * Opens `url` in a new context (a new visitor) of `browser`, recording the
 * requests to `watch` (default ORRERY_URL). `contextOptions` go to
 * `browser.newContext` (the default user agent is `visitorUserAgent`);
 * `init` is a script run in the page before its own (`addInitScript`);
 * `prepare(context, page)` runs before the navigation (e.g. `context.route`).
 * Answers once the page has loaded (`waitUntil`, default `load`).
 */
export async function openPage(browser, url, { watch, name, contextOptions = {}, waitUntil = 'load', init, prepare } = {}) {
  const watched = [watch ?? orreryUrl()].flat();
  const context = await browser.newContext({
    userAgent: visitorUserAgent(browser),
    viewport: { width: 1280, height: 800 },
    ...contextOptions,
  });
  const page = await context.newPage();
  const tracked = new TrackedPage(context, page, watched, name ?? new URL(url).pathname);
  if (init) await page.addInitScript(init);
  if (prepare) await prepare(context, page);
  await page.goto(url, { waitUntil });
  return tracked;
}

// ---------------------------------------------------------------------------
// Bodies.

/**
 * What a request carried, decoded: `{encoding, json, text}` where encoding
 * is `none`, `json`, `gzip` (gzip magic bytes, whatever the content type),
 * `base64-form` (`data=<base64 JSON>`), `form` (`data=<JSON>`) or `text`.
 */
export function decodeBody(record) {
  const buf = record.body;
  if (!buf || buf.length === 0) return { encoding: 'none', json: null, text: '' };
  if (buf[0] === 0x1f && buf[1] === 0x8b) {
    const text = zlib.gunzipSync(buf).toString('utf8');
    return { encoding: 'gzip', json: tryJson(text), text };
  }
  const raw = buf.toString('utf8');
  const isForm = (record.contentType ?? '').startsWith('application/x-www-form-urlencoded') || raw.startsWith('data=');
  if (isForm) {
    const data = new URLSearchParams(raw).get('data') ?? '';
    const trimmed = data.trim();
    if (trimmed.startsWith('{') || trimmed.startsWith('[')) return { encoding: 'form', json: tryJson(trimmed), text: trimmed };
    const text = Buffer.from(trimmed.replace(/ /g, '+'), 'base64').toString('utf8');
    return { encoding: 'base64-form', json: tryJson(text), text };
  }
  const json = tryJson(raw);
  return { encoding: json === undefined ? 'text' : 'json', json: json ?? null, text: raw };
}

function tryJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// The scenario's main.

/**
 * Runs `main(cleanup)` under the time limit: `cleanup(fn)` registers a
 * closer (run in reverse order, also on failure). Prints one JSON line on
 * stdout, `{"ok": true, ...summary}` or `{"ok": false, "error": ...}`, and
 * sets the exit code.
 */
export async function runScenario(main) {
  const closers = [];
  const cleanup = (fn) => closers.push(fn);
  const limit = Number(process.env.ORRERY_BROWSER_TIMEOUT_MS ?? 90000);
  let timer;
  let out;
  try {
    const summary = await Promise.race([
      main(cleanup),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`scenario timed out after ${limit} ms`)), limit);
      }),
    ]);
    out = { ok: true, ...summary };
  } catch (e) {
    log(String(e?.stack ?? e));
    out = { ok: false, error: String(e?.message ?? e), ...(e?.summary ?? {}) };
  } finally {
    clearTimeout(timer);
    for (const close of closers.reverse()) {
      let t;
      try {
        await Promise.race([close(), new Promise((resolve) => (t = setTimeout(resolve, 10000)))]);
      } catch (e) {
        log(`cleanup: ${e?.message ?? e}`);
      } finally {
        clearTimeout(t);
      }
    }
  }
  // Exits even if something the scenario started still holds the event
  // loop (e.g. after a time-out).
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.ok ? 0 : 1));
}

/** Throws `message` when `cond` is false. */
export function check(cond, message) {
  if (!cond) throw new Error(message);
}
