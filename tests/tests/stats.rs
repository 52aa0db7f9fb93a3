//! Statistics end to end, on each backend: a generated data set (two
//! projects, visitors over six days, sessions that cross hours, bounces,
//! UTM campaigns, referrers, properties, then late events into old hours
//! and into an existing session) is sent through the real binary, and
//! every number of overview, time series and breakdown, with and without
//! filters, is compared with the same number computed here from the
//! events this test sent: first while the hours are still raw, then once
//! the rollup job has rolled them up, then again after the late events,
//! and after `orrery rollups rebuild`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use orrery_tests::{Api, Lcg, Server, each_backend};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// One event as sent, with what the test derives from it.
#[derive(Debug, Clone)]
struct Sent {
    ts: i64,
    seq: usize,
    name: String,
    visitor: String,
    session: String,
    page: String,
    utm_source: Option<String>,
    plan: Option<String>,
}

impl Sent {
    fn body(&self) -> Value {
        let mut url = format!("https://shop.test{}", self.page);
        if let Some(u) = &self.utm_source {
            url.push_str(&format!("?utm_source={u}"));
        }
        let mut e = json!({
            "event": self.name,
            "timestamp": self.ts,
            "distinct_id": self.visitor,
            "session_id": self.session,
            "url": url,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        });
        if let Some(p) = &self.plan {
            e["properties"] = json!({"plan": p});
        }
        e
    }
}

const PAGES: [&str; 4] = ["/", "/pricing", "/blog/a", "/docs"];
const SOURCES: [Option<&str>; 3] = [None, Some("news"), Some("ads")];
const PLANS: [&str; 2] = ["pro", "team"];

/// Sessions of `visitors` visitors over the six days before `day0 + 6d`,
/// starting at `first_seq`, tagged with `tag` (session ids unique).
fn generate(rng: &mut Lcg, day0: i64, visitors: u64, tag: &str, seq: &mut usize) -> Vec<Sent> {
    let mut out = Vec::new();
    for v in 0..visitors {
        for s in 0..=rng.next(3) {
            let start = day0
                + rng.next(6) as i64 * DAY
                + rng.next(24) as i64 * HOUR
                + rng.next(60) as i64 * 60_000;
            let page0 = PAGES[rng.next(4) as usize];
            let utm = SOURCES[rng.next(3) as usize].map(str::to_owned);
            let mut ts = start;
            for i in 0..=rng.next(4) {
                let name = if i == 0 || rng.next(3) > 0 {
                    "pageview"
                } else {
                    "signup"
                };
                *seq += 1;
                out.push(Sent {
                    ts,
                    seq: *seq,
                    name: name.to_owned(),
                    visitor: format!("{tag}-v{v}"),
                    session: format!("{tag}-v{v}-s{s}"),
                    page: if i == 0 {
                        page0.to_owned()
                    } else {
                        PAGES[rng.next(4) as usize].to_owned()
                    },
                    utm_source: if i == 0 { utm.clone() } else { None },
                    plan: (name == "signup").then(|| PLANS[rng.next(2) as usize].to_owned()),
                });
                ts += (1 + rng.next(25) as i64) * 60_000;
            }
        }
    }
    out
}

/// The numbers the API reports, computed here.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expect {
    events: i64,
    visitors: u64,
    sessions: i64,
    pageviews: i64,
    views_per_session: f64,
    bounce_rate: f64,
    avg_session_duration_ms: f64,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A session: its events in order.
struct SessionRows<'a>(Vec<&'a Sent>);

impl SessionRows<'_> {
    fn start(&self) -> i64 {
        self.0[0].ts
    }
    fn entry(&self) -> &Sent {
        self.0[0]
    }
    fn exit_page(&self) -> &str {
        &self.0[self.0.len() - 1].page
    }
    fn pageviews(&self) -> i64 {
        self.0.iter().filter(|e| e.name == "pageview").count() as i64
    }
    fn duration(&self) -> i64 {
        self.0[self.0.len() - 1].ts - self.0[0].ts
    }
}

fn sessions(events: &[Sent]) -> Vec<SessionRows<'_>> {
    let mut by: BTreeMap<&str, Vec<&Sent>> = BTreeMap::new();
    for e in events {
        by.entry(&e.session).or_default().push(e);
    }
    by.into_values()
        .map(|mut v| {
            v.sort_by_key(|e| (e.ts, e.seq));
            SessionRows(v)
        })
        .collect()
}

/// Event numbers from events matching `keep` in `[from, to)`, session
/// numbers from the sessions started then whose first event matches.
fn expect(events: &[Sent], from: i64, to: i64, keep: &dyn Fn(&Sent) -> bool) -> Expect {
    let inside: Vec<&Sent> = events
        .iter()
        .filter(|e| e.ts >= from && e.ts < to && keep(e))
        .collect();
    let all = sessions(events);
    let started: Vec<&SessionRows> = all
        .iter()
        .filter(|s| s.start() >= from && s.start() < to && keep(s.entry()))
        .collect();
    let n = started.len() as i64;
    let per = |x: i64| {
        if n == 0 {
            0.0
        } else {
            round4(x as f64 / n as f64)
        }
    };
    Expect {
        events: inside.len() as i64,
        visitors: inside
            .iter()
            .map(|e| e.visitor.as_str())
            .collect::<HashSet<_>>()
            .len() as u64,
        sessions: n,
        pageviews: inside.iter().filter(|e| e.name == "pageview").count() as i64,
        views_per_session: per(started.iter().map(|s| s.pageviews()).sum()),
        bounce_rate: per(started.iter().filter(|s| s.pageviews() <= 1).count() as i64),
        avg_session_duration_ms: per(started.iter().map(|s| s.duration()).sum()),
    }
}

fn got(v: &Value) -> Expect {
    let i = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(v["visitors_exact"], true, "{v}");
    Expect {
        events: i("events"),
        visitors: v["visitors"].as_u64().unwrap(),
        sessions: i("sessions"),
        pageviews: i("pageviews"),
        views_per_session: f("views_per_session"),
        bounce_rate: f("bounce_rate"),
        avg_session_duration_ms: f("avg_session_duration_ms"),
    }
}

async fn stats(server: &Server, project: &str, key: &str, what: &str, query: &str) -> Value {
    let path = format!("/api/v1/projects/{project}/stats/{what}?{query}");
    let (status, body) = server.get(&path, key).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Waits until the writer has written the sessions of `events` (once a
/// second; the hours to roll up are marked then too): until the overview
/// of all time counts every event and session sent.
async fn settled(server: &Server, events: &[Sent]) {
    let keys = &server.keys;
    let want = expect(events, 0, i64::MAX / 2, &|_| true);
    let query = format!("from=0&to={}", orrery_core::event::now_ms() + 1);
    for _ in 0..100 {
        let o = stats(
            server,
            &keys.project_id,
            &keys.secret_key,
            "overview",
            &query,
        )
        .await;
        let now = got(&o["current"]);
        if now.events == want.events && now.sessions == want.sessions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the events and sessions sent did not all show within 10 s");
}

/// Waits until the rollup job has nothing left to do: no hour to redo,
/// no day to merge.
async fn rolled_up(server: &Server) -> Value {
    for _ in 0..200 {
        let (ok, out, err) = server.cli(&["stats", "--json"]);
        assert!(ok, "{err}");
        let s: Value = serde_json::from_str(out.trim()).unwrap();
        if s["rollup_pending_hours"] == 0 && s["rollup_pending_days"] == 0 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the rollup job did not finish");
}

/// Every comparison, on the first project's `events`.
async fn check_all(server: &Server, events: &[Sent], from: i64, to: i64, when: &str) {
    let keys = server.keys.clone();
    let (p, k) = (keys.project_id.as_str(), keys.secret_key.as_str());
    let all = |_: &Sent| true;
    let range = format!("from={from}&to={to}");

    // Overview and its previous period.
    let o = stats(server, p, k, "overview", &range).await;
    assert_eq!(
        got(&o["current"]),
        expect(events, from, to, &all),
        "{when}: overview {o}"
    );
    let len = to - from;
    assert_eq!(
        got(&o["previous"]),
        expect(events, from - len, from, &all),
        "{when}: previous period"
    );

    // Filters: a rolled dimension (rollups), a property (raw events), and
    // an entry page (sessions).
    let pricing = |e: &Sent| e.page == "/pricing";
    let o = stats(
        server,
        p,
        k,
        "overview",
        &format!("{range}&filter=page:eq:%2Fpricing"),
    )
    .await;
    assert_eq!(
        got(&o["current"]),
        expect(events, from, to, &pricing),
        "{when}: page filter"
    );
    let pro = |e: &Sent| e.plan.as_deref() == Some("pro");
    let o = stats(
        server,
        p,
        k,
        "overview",
        &format!("{range}&filter=properties.plan:eq:pro"),
    )
    .await;
    assert_eq!(
        got(&o["current"]),
        expect(events, from, to, &pro),
        "{when}: property filter"
    );
    let both = |e: &Sent| e.page != "/docs" && e.utm_source.is_some();
    let o = stats(
        server,
        p,
        k,
        "overview",
        &format!("{range}&filter=page:neq:%2Fdocs&filter=utm_source:in:news%7Cads"),
    )
    .await;
    assert_eq!(
        got(&o["current"]),
        expect(events, from, to, &both),
        "{when}: two filters"
    );

    // Time series by day in New York: each bucket starts at a local
    // midnight and holds exactly its events.
    let t = stats(
        server,
        p,
        k,
        "timeseries",
        &format!("{range}&interval=day&tz=America%2FNew_York"),
    )
    .await;
    let points = t["points"].as_array().unwrap();
    let starts: Vec<i64> = points
        .iter()
        .map(|pt| {
            chrono::DateTime::parse_from_rfc3339(pt["start"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
    for (i, s) in starts.iter().enumerate() {
        let local = chrono::DateTime::from_timestamp_millis(*s)
            .unwrap()
            .with_timezone(&tz);
        assert_eq!(
            local.format("%H:%M").to_string(),
            "00:00",
            "{when}: bucket {i}"
        );
        let end = starts.get(i + 1).copied().unwrap_or(to).min(to);
        assert!(end - s >= 23 * HOUR || i == 0 || i + 1 == starts.len());
        let want = expect(events, (*s).max(from), end, &all);
        assert_eq!(got(&points[i]), want, "{when}: day {}", points[i]["start"]);
    }
    assert!(starts[0] <= from && *starts.last().unwrap() < to);

    // Breakdowns: page, UTM source, a property, entry page (sessions).
    let b = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=page&limit=1000"),
    )
    .await;
    let rows = b["rows"].as_array().unwrap();
    let all_pages = rows.clone();
    assert_eq!(rows.len(), PAGES.len(), "{when}: {b}");
    for row in rows {
        let page = row["value"].as_str().unwrap().to_owned();
        let want = expect(events, from, to, &|e: &Sent| e.page == page);
        assert_eq!(got(row), want, "{when}: page {page}");
    }
    // Sorted by visitors.
    let visitors: Vec<u64> = rows
        .iter()
        .map(|r| r["visitors"].as_u64().unwrap())
        .collect();
    assert!(visitors.windows(2).all(|w| w[0] >= w[1]), "{visitors:?}");

    let b = stats(server, p, k, "breakdown", &format!("{range}&by=utm_source")).await;
    for row in b["rows"].as_array().unwrap() {
        let v = row["value"].as_str().map(str::to_owned);
        let want = expect(events, from, to, &|e: &Sent| e.utm_source == v);
        assert_eq!(got(row), want, "{when}: utm_source {v:?}");
    }
    let b = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=properties.plan"),
    )
    .await;
    let plans: HashMap<Option<String>, &Value> = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["value"].as_str().map(str::to_owned), r))
        .collect();
    // Events without a plan: a row without `value` (the spec says a
    // string when present; never null).
    assert!(plans.contains_key(&None), "{when}: {b}");
    for row in b["rows"].as_array().unwrap() {
        assert!(
            row.get("value").is_none_or(Value::is_string),
            "{when}: {row}"
        );
    }
    for plan in PLANS {
        let want = expect(events, from, to, &|e: &Sent| {
            e.plan.as_deref() == Some(plan)
        });
        assert_eq!(
            got(plans[&Some(plan.to_owned())]),
            want,
            "{when}: plan {plan}"
        );
    }

    let b = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=entry_page&limit=1000"),
    )
    .await;
    let all_sessions = sessions(events);
    for row in b["rows"].as_array().unwrap() {
        let page = row["value"].as_str().unwrap();
        let chosen: Vec<&SessionRows> = all_sessions
            .iter()
            .filter(|s| s.start() >= from && s.start() < to && s.entry().page == page)
            .collect();
        assert_eq!(row["sessions"], chosen.len() as i64, "{when}: entry {page}");
        let evs: usize = chosen.iter().map(|s| s.0.len()).sum();
        assert_eq!(row["events"], evs as i64, "{when}: entry {page} events");
        let bounces = chosen.iter().filter(|s| s.pageviews() <= 1).count() as f64;
        assert_eq!(
            row["bounce_rate"].as_f64().unwrap(),
            round4(bounces / chosen.len() as f64)
        );
    }
    let b = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=exit_page&limit=1000"),
    )
    .await;
    let exits: i64 = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sessions"].as_i64().unwrap())
        .sum();
    let want = all_sessions
        .iter()
        .filter(|s| s.start() >= from && s.start() < to && !s.exit_page().is_empty())
        .count() as i64;
    assert_eq!(exits, want, "{when}: exit pages");

    // Pages of two values.
    let b1 = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=page&limit=2"),
    )
    .await;
    // The rows of a page are those of the whole list (only the sets of
    // values that can place in the page are merged whole).
    assert_eq!(b1["rows"].as_array().unwrap()[..], all_pages[..2], "{when}");
    assert_eq!(b1["total_values"], PAGES.len());
    let next = b1["next_offset"].as_u64().unwrap();
    let b2 = stats(
        server,
        p,
        k,
        "breakdown",
        &format!("{range}&by=page&limit=2&offset={next}"),
    )
    .await;
    assert_eq!(b2["rows"].as_array().unwrap()[..], all_pages[2..], "{when}");
    assert!(b2.get("next_offset").is_none());
}

#[tokio::test]
async fn statistics_equal_a_raw_count_before_and_after_rollups() {
    // No answer cache here: the test watches the numbers change.
    let env = [
        ("ORRERY_ANALYTICS__ROLLUP_INTERVAL_SECS", "1"),
        // The late events go into hours rolled up seconds before.
        ("ORRERY_ANALYTICS__ROLLUP_REDO_GAP_SECS", "0"),
        ("ORRERY_ANALYTICS__CACHE_TTL_SECS", "0"),
    ];
    each_backend("stats", &env, async |server| {
        let now = orrery_core::event::now_ms();
        let day0 = (now / DAY - 6) * DAY;
        let mut rng = Lcg(7);
        let mut seq = 0;
        let mut events = generate(&mut rng, day0, 40, "a", &mut seq);
        // Some events in the current hour: read raw, never from a rollup.
        for i in 0..5 {
            seq += 1;
            events.push(Sent {
                ts: now - 60_000 * (i + 1),
                seq,
                name: "pageview".into(),
                visitor: format!("now-{i}"),
                session: format!("now-s{i}"),
                page: "/".into(),
                utm_source: None,
                plan: None,
            });
        }
        // A crowd on one day: 4,500 visitors of "/", more than a daily
        // rollup keeps with its cells (their hashes lie apart, and are
        // read back to count exactly).
        for i in 0..4500 {
            seq += 1;
            events.push(Sent {
                ts: day0 + 2 * DAY + (i % 24) * HOUR + (i % 3600) * 1000,
                seq,
                name: "pageview".into(),
                visitor: format!("crowd-{i}"),
                session: format!("crowd-s{i}"),
                page: "/".into(),
                utm_source: None,
                plan: None,
            });
        }
        events.retain(|e| e.ts < now);
        let keys = server.keys.clone();
        let other = server.create_project(&keys.secret_key, "other").await;
        let noise = generate(&mut Lcg(99), day0, 10, "b", &mut 0);
        send(server, &other.public_key, &noise).await;
        send(server, &keys.public_key, &events).await;
        settled(server, &events).await;

        let from = day0 + 17 * 60_000;
        let to = now + 1;
        check_all(server, &events, from, to, "raw").await;
        let s = rolled_up(server).await;
        assert!(s["rollup_rows"].as_i64().unwrap() > 0, "{s}");
        assert!(s["rollup_hour_packs"].as_i64().unwrap() > 0, "{s}");
        // The days that are over are merged: whole days of the ranges
        // below are read from them.
        assert!(s["rollup_day_rows"].as_i64().unwrap() > 0, "{s}");
        check_all(server, &events, from, to, "rolled up").await;
        // A range cut inside hours at both ends.
        check_all(
            server,
            &events,
            day0 + DAY + 20 * 60_000,
            day0 + 4 * DAY + 3 * HOUR + 1,
            "cut",
        )
        .await;

        // Late events: new sessions in old hours, and an event before the
        // start of an existing session (its start moves to an earlier hour).
        let mut late = generate(&mut Lcg(3), day0, 5, "late", &mut seq);
        let first = sessions(&events)
            .into_iter()
            .find(|s| s.start() < now - 2 * DAY)
            .map(|s| s.entry().clone())
            .unwrap();
        seq += 1;
        late.push(Sent {
            ts: first.ts - 2 * HOUR,
            seq,
            name: "pageview".into(),
            page: "/docs".into(),
            utm_source: None,
            plan: None,
            ..first
        });
        send(server, &keys.public_key, &late).await;
        events.extend(late);
        settled(server, &events).await;
        check_all(server, &events, from, to, "late, raw").await;
        rolled_up(server).await;
        check_all(server, &events, from, to, "late, rolled up").await;

        // Rebuilding changes nothing.
        let (ok, out, err) = server.cli(&["rollups", "rebuild"]);
        assert!(ok && out.contains("rebuilt the rollups of"), "{out} {err}");
        check_all(server, &events, from, to, "rebuilt").await;
        let (ok, _, err) = server.cli(&[
            "rollups",
            "rebuild",
            "--project",
            &keys.project_id,
            "--from",
            "2026-01-01T00:00:00Z",
        ]);
        assert!(ok, "{err}");
        check_all(server, &events, from, to, "rebuilt one project").await;

        // A range of millennia, read raw (a property filter): it costs what
        // the data costs, and counts what is there.
        let far = chrono::DateTime::parse_from_rfc3339("7458-01-15T00:00:00Z")
            .unwrap()
            .timestamp_millis();
        let pro = |e: &Sent| e.plan.as_deref() == Some("pro");
        let query = format!("from=946684800000&to={far}&filter=properties.plan:eq:pro");
        let o = stats(
            server,
            &keys.project_id,
            &keys.secret_key,
            "overview",
            &query,
        )
        .await;
        assert_eq!(got(&o["current"]), expect(&events, 0, far, &pro), "{o}");

        check_users(server, &events, from, to).await;

        // Another project's numbers are its own.
        let o = stats(
            server,
            &other.project_id,
            &other.secret_key,
            "overview",
            &format!("from={from}&to={to}"),
        )
        .await;
        assert_eq!(got(&o["current"]), expect(&noise, from, to, &|_| true));
    })
    .await;
}

/// Users: every distinct id of the range with its first and last seen,
/// events and sessions there, last seen first, over pages; one user over
/// all time; an unknown one is a 404.
async fn check_users(server: &Server, events: &[Sent], from: i64, to: i64) {
    let keys = &server.keys;
    let mut want: BTreeMap<&str, (i64, i64, i64, HashSet<&str>)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts >= from && e.ts < to) {
        let u = want
            .entry(&e.visitor)
            .or_insert((i64::MAX, i64::MIN, 0, HashSet::new()));
        u.0 = u.0.min(e.ts);
        u.1 = u.1.max(e.ts);
        u.2 += 1;
        u.3.insert(&e.session);
    }
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let path = format!(
            "/api/v1/projects/{}/users?from={from}&to={to}&limit=97&offset={offset}",
            keys.project_id
        );
        let (status, page) = server.get(&path, &keys.secret_key).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total_users"], want.len());
        got.extend(page["users"].as_array().unwrap().iter().cloned());
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(got.len(), want.len());
    // An offset past every user (even past the databases' signed
    // integers) is an empty last page, not a failure.
    for offset in [want.len() as u64, u64::MAX] {
        let path = format!(
            "/api/v1/projects/{}/users?from={from}&to={to}&offset={offset}",
            keys.project_id
        );
        let (status, page) = server.get(&path, &keys.secret_key).await;
        assert_eq!(status, 200, "offset {offset}: {page}");
        assert_eq!(page["users"], json!([]), "offset {offset}");
        assert!(page.get("next_offset").is_none(), "offset {offset}: {page}");
    }
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let last: Vec<i64> = got.iter().map(|u| ms(&u["last_seen"])).collect();
    assert!(last.windows(2).all(|w| w[0] >= w[1]), "last seen first");
    for u in &got {
        let w = &want[u["distinct_id"].as_str().unwrap()];
        assert_eq!(
            (
                ms(&u["first_seen"]),
                ms(&u["last_seen"]),
                u["events"].as_i64().unwrap()
            ),
            (w.0, w.1, w.2),
            "{u}"
        );
        assert_eq!(u["sessions"], w.3.len(), "{u}");
    }
    // One user, over all time.
    let one = &events[0].visitor;
    let all: Vec<&Sent> = events.iter().filter(|e| &e.visitor == one).collect();
    let path = format!("/api/v1/projects/{}/users/{one}", keys.project_id);
    let (status, u) = server.get(&path, &keys.secret_key).await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["events"], all.len());
    assert_eq!(
        ms(&u["first_seen"]),
        all.iter().map(|e| e.ts).min().unwrap()
    );
    let path = format!("/api/v1/projects/{}/users/nobody-at-all", keys.project_id);
    let (status, body) = server.get(&path, &keys.secret_key).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

async fn send(server: &Server, key: &str, events: &[Sent]) {
    for chunk in events.chunks(100) {
        let batch: Vec<Value> = chunk.iter().map(Sent::body).collect();
        let (status, body) = server
            .post_events(key, &[], json!({ "batch": batch }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
}

#[tokio::test]
async fn bad_queries_are_400s_naming_the_parameter_and_other_projects_404() {
    let server = Server::sqlite(&[]).await;
    let keys = server.keys.clone();
    let p = &keys.project_id;
    let cases = [
        ("overview?range=2w", "range"),
        ("overview?range=7d&from=0", "range"),
        ("overview?from=1000", "to"),
        ("overview?from=2000&to=1000", "to"),
        ("overview?filter=country", "filter"),
        ("overview?filter=colour:eq:red", "filter"),
        ("overview?filter=country:like:DE", "filter"),
        ("overview?filter=country:eq:", "filter"),
        ("overview?filter=properties.:eq:x", "filter"),
        ("timeseries?interval=fortnight", "interval"),
        ("timeseries?tz=Mars%2FOlympus", "tz"),
        ("timeseries?range=all&interval=hour&from=0", "range"),
        (
            "timeseries?from=0&to=4000000000000&interval=hour",
            "interval",
        ),
        ("breakdown?by=colour", "by"),
        ("breakdown?by=page&limit=0", "limit"),
        ("breakdown?by=page&limit=1001", "limit"),
    ];
    for (query, parameter) in cases {
        let path = format!("/api/v1/projects/{p}/stats/{query}");
        let (status, body) = server.get(&path, &keys.secret_key).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{query}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{parameter}`")),
            "{query}: {message}"
        );
    }
    // `by` is required.
    let (status, body) = server
        .get(
            &format!("/api/v1/projects/{p}/stats/breakdown"),
            &keys.secret_key,
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Another project's secret key: 404, as on every project route (the
    // security scheme checks it: to that key the project does not exist);
    // the public key: 403; no project: 404.
    let other = server.create_project(&keys.secret_key, "other").await;
    for what in ["overview", "timeseries", "breakdown?by=page"] {
        let path = format!("/api/v1/projects/{p}/stats/{what}");
        let (status, body) = server.get(&path, &other.secret_key).await;
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body["code"], "not_found");
        let (status, _) = server.get(&path, &keys.public_key).await;
        assert_eq!(status, 403, "{what}");
        let missing = format!("/api/v1/projects/00000000-0000-0000-0000-000000000000/stats/{what}");
        let (status, _) = server.get(&missing, &keys.secret_key).await;
        assert_eq!(status, 404);
    }
    // An empty project answers zeros.
    let (status, body) = server
        .get(
            &format!("/api/v1/projects/{p}/stats/overview?range=all"),
            &keys.secret_key,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"]["events"], 0);
}

#[tokio::test]
async fn new_events_clear_cached_answers() {
    let server = Server::sqlite(&[("ORRERY_ANALYTICS__CACHE_TTL_SECS", "600")]).await;
    let keys = server.keys.clone();
    let path = format!(
        "/api/v1/projects/{}/stats/overview?range=24h",
        keys.project_id
    );
    let events = |o: &Value| o["current"]["events"].as_i64().unwrap();
    let (_, first) = server.get(&path, &keys.secret_key).await;
    assert_eq!(events(&first), 0);
    for n in 1..=3 {
        let (status, body) = server
            .post_events(
                &keys.public_key,
                &[],
                json!({"event": "pageview", "url": "https://x.test/"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // Cached for ten minutes, but the new event is counted at once.
        let (_, o) = server.get(&path, &keys.secret_key).await;
        assert_eq!(events(&o), n, "{o}");
        let (_, again) = server.get(&path, &keys.secret_key).await;
        assert_eq!(o, again);
    }

    // A deleted project is a 404, not a cached answer.
    let other = server.create_project(&keys.secret_key, "gone").await;
    let users = format!("/api/v1/projects/{}/users", other.project_id);
    let stats = format!("/api/v1/projects/{}/stats/overview", other.project_id);
    for path in [&users, &stats] {
        let (status, _) = server.get(path, &keys.secret_key).await;
        assert_eq!(status, 200);
    }
    let (status, body) = server
        .call(
            "DELETE",
            &format!("/api/v1/projects/{}", other.project_id),
            &keys.secret_key,
            None,
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    for path in [&users, &stats] {
        let (status, body) = server.get(path, &keys.secret_key).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
