/**
 * The generated client against a running gateway: create a public key with
 * an admin secret key, send a batch with it, read the events back, and see
 * an error answer come out as openapi-fetch's `error`.
 *
 * Needs ORRERY_URL (e.g. http://127.0.0.1:8080), ORRERY_ADMIN_KEY (an admin
 * `sk_...`) and ORRERY_PROJECT_ID; run by tests/tests/ts_client.rs with a
 * fresh server, or by hand with `npm test`.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { type ErrorBody, type Schema, createOrreryClient } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set: point ORRERY_URL, ORRERY_ADMIN_KEY and ORRERY_PROJECT_ID at a running gateway`);
  }
  return value;
}

const baseUrl = env("ORRERY_URL");
const adminKey = env("ORRERY_ADMIN_KEY");
const projectId = env("ORRERY_PROJECT_ID");

test("a new public key sends a batch; the secret key reads it back", async () => {
  const admin = createOrreryClient(baseUrl, adminKey);

  const created = await admin.POST("/api/v1/projects/{project_id}/keys", {
    params: { path: { project_id: projectId } },
    body: { name: "ts", kind: "public" },
  });
  assert.equal(created.response.status, 201, JSON.stringify(created.error));
  assert.ok(created.data, "create_key answered no body");
  const key: Schema<"CreatedKeyOut"> = created.data;
  assert.match(key.key, /^pk_/);
  assert.equal(key.info.kind, "public");
  assert.equal(key.info.name, "ts");
  assert.equal(key.info.project_id, projectId);
  assert.equal(key.info.active, true);
  assert.ok(key.key.startsWith(key.info.prefix), `${key.key} does not start with ${key.info.prefix}`);

  // One distinct id per run: the read below sees this run's events only.
  const user = `ts-${randomUUID()}`;
  const chosenId = randomUUID();
  const sent: Schema<"EventInput">[] = [
    { event: "ts_signup", distinct_id: user, properties: { plan: "free", n: 0 } },
    { event: "ts_pageview", distinct_id: user, id: chosenId, properties: { path: "/docs", n: 1, tags: ["a", "b"] } },
    { event: "ts_purchase", distinct_id: user, properties: { n: 2, cart: { items: 3, total: 12.5 }, gift: false } },
  ];

  const pub = createOrreryClient(baseUrl, key.key);
  const ingested = await pub.POST("/api/v1/events", { body: { batch: sent } });
  assert.equal(ingested.response.status, 200, JSON.stringify(ingested.error));
  assert.ok(ingested.data, "ingest_events answered no body");
  const answer: Schema<"IngestResponse"> = ingested.data;
  assert.deepEqual(
    {
      accepted: answer.accepted,
      duplicates: answer.duplicates,
      rejected: answer.rejected,
      dropped: answer.dropped,
      dead_lettered: answer.dead_lettered,
    },
    { accepted: 3, duplicates: 0, rejected: 0, dropped: 0, dead_lettered: 0 },
  );
  assert.deepEqual(
    answer.results.map((r) => [r.index, r.status]),
    [
      [0, "accepted"],
      [1, "accepted"],
      [2, "accepted"],
    ],
  );
  const ids = answer.results.map((r) => {
    assert.ok(r.id, `result ${r.index} has no id`);
    return r.id;
  });
  assert.equal(ids[1], chosenId, "the client-chosen id is the event's id");
  assert.equal(new Set(ids).size, 3, "ids are distinct");

  const page = await admin.GET("/api/v1/projects/{project_id}/events", {
    params: { path: { project_id: projectId }, query: { distinct_id: user, limit: 10 } },
  });
  assert.equal(page.response.status, 200, JSON.stringify(page.error));
  assert.ok(page.data, "list_events answered no body");
  const events: Schema<"EventOut">[] = page.data.events;
  assert.equal(page.data.next_cursor, undefined, "one page holds them all");
  // Newest first: the batch in reverse.
  assert.deepEqual(
    events.map((e) => ({ id: e.id, event: e.event, distinct_id: e.distinct_id, properties: e.properties })),
    sent
      .map((e, i) => ({ id: ids[i], event: e.event, distinct_id: user, properties: e.properties }))
      .reverse(),
  );
  for (const e of events) {
    assert.ok(!Number.isNaN(Date.parse(e.timestamp)), `timestamp ${e.timestamp}`);
    assert.ok(!Number.isNaN(Date.parse(e.received_at)), `received_at ${e.received_at}`);
  }
});

test("an unknown key answers 401 invalid_key as openapi-fetch's error", async () => {
  const stranger = createOrreryClient(baseUrl, "sk_not_a_key_of_this_gateway");
  const page = await stranger.GET("/api/v1/projects/{project_id}/events", {
    params: { path: { project_id: projectId }, query: { limit: 1 } },
  });
  assert.equal(page.response.status, 401);
  assert.equal(page.data, undefined);
  assert.ok(page.error, "no error body");
  const error: ErrorBody = page.error;
  assert.equal(error.code, "invalid_key");
  assert.equal(typeof error.message, "string");

  const ingest = await createOrreryClient(baseUrl, "pk_not_a_key_of_this_gateway").POST("/api/v1/events", {
    body: { event: "never_stored", distinct_id: "nobody" },
  });
  assert.equal(ingest.response.status, 401);
  assert.equal(ingest.error?.code, "invalid_key");
});

/**
 * Never called: `tsc` fails the build when one of these stops being a type
 * error, i.e. when the generated types stop describing the API.
 */
export async function typesRejectMisuse(): Promise<void> {
  const admin = createOrreryClient(baseUrl, adminKey);
  await admin.POST("/api/v1/projects/{project_id}/keys", {
    params: { path: { project_id: projectId } },
    // @ts-expect-error `kind` is public, secret or execute
    body: { name: "ts", kind: "root" },
  });
  // @ts-expect-error list_events needs the project_id path parameter
  await admin.GET("/api/v1/projects/{project_id}/events", {});
  // @ts-expect-error an event needs a name
  await admin.POST("/api/v1/events", { body: { batch: [{ distinct_id: "u" }] } });
  // @ts-expect-error no such route
  await admin.GET("/api/v1/projects/{project_id}/evnts", { params: { path: { project_id: projectId } } });
  // @ts-expect-error events are sent with POST
  await admin.GET("/api/v1/events", {});
  // @ts-expect-error not one of ErrorBody's codes
  const code: ErrorBody["code"] = "no_such_code";
  void code;
}
