/** Options of {@link init}; the script tag takes them as `data-*` attributes. */
export interface Options {
  /** The project's public key (`pk_...`). */
  key: string;
  /** Orrery's origin, e.g. `https://orrery.example` (default: the page's). */
  api?: string;
  /** Page views on history navigation and hash changes (default true). */
  spa?: boolean;
  /** A page view at start (default true). */
  auto?: boolean;
  /** Track clicks on links to other hosts as `outbound_link` (default false). */
  outbound?: boolean;
  /** Track clicks on file links (pdf, zip...) as `file_download` (default false). */
  downloads?: boolean;
  /** Where the anonymous id lives: `session` (sessionStorage, default) or `memory`. */
  storage?: 'session' | 'memory';
  /** Send nothing when Do Not Track or Global Privacy Control is on (default true). */
  respectDnt?: boolean;
  /** Events per request; a full batch is sent at once (default 10). */
  batchSize?: number;
  /** Milliseconds an event waits for others before it is sent (default 2000). */
  flushInterval?: number;
}

/** A running tracker. */
export interface Tracker {
  /** Queues a custom event with optional properties. */
  track(event: string, properties?: Record<string, unknown>): void;
  /** Queues a page view of the current URL (once per URL in a row). */
  page(): void;
  /** From now on the user is `id`; sends an `identify` event with `properties`. */
  identify(id: string, properties?: Record<string, unknown>): void;
  /** Forgets the user, the anonymous id and the session. */
  reset(): void;
  /** Sends the queued events now. */
  flush(): Promise<void>;
  /** Stops tracking in this browser (kept in localStorage) and drops the queue. */
  optOut(): void;
  /** Tracks again. */
  optIn(): void;
}

/** Starts a tracker. */
export function init(options: Options): Tracker;
