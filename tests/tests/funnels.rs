//! Funnels and retention end to end, on each backend, through the real
//! binary: hand-computed cases first, then a generated data set (people
//! over five weeks, late events, another project's noise) compared with
//! the same numbers computed here, by brute force, from the events sent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, TimeZone};
use orrery_tests::{Api, Lcg, Server, each_backend};
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone)]
struct Ev {
    ts: i64,
    seq: usize,
    name: &'static str,
    person: String,
    page: &'static str,
    plan: Option<&'static str>,
}

impl Ev {
    fn body(&self) -> Value {
        let mut e = json!({
            "event": self.name,
            "timestamp": self.ts,
            "distinct_id": self.person,
            "url": format!("https://shop.test{}", self.page),
        });
        if let Some(p) = self.plan {
            e["properties"] = json!({ "plan": p });
        }
        e
    }
}

async fn send(server: &Server, key: &str, events: &[Ev]) {
    // In arrival order, so that `seq` (ties of time) is the server's too.
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.seq);
    for chunk in sorted.chunks(100) {
        let batch: Vec<Value> = chunk.iter().map(Ev::body).collect();
        let (status, body) = server
            .post_events(key, &[], json!({ "batch": batch }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
}

async fn get(server: &Server, what: &str, query: &str) -> Value {
    let keys = &server.keys;
    let path = format!("/api/v1/projects/{}/stats/{what}?{query}", keys.project_id);
    let (status, body) = server.get(&path, &keys.secret_key).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// (people, median ms, mean ms) per step of an answer's `steps`.
fn steps(v: &Value) -> Vec<(u64, Option<i64>, Option<f64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["people"].as_u64().unwrap(),
                s["median_time_to_convert_ms"].as_i64(),
                s["avg_time_to_convert_ms"].as_f64(),
            )
        })
        .collect()
}

/// (people, active per period) per cohort of a retention answer.
fn cohorts(r: &Value) -> Vec<(u64, Vec<u64>)> {
    r["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let active = c["active"].as_array().unwrap();
            let active = active.iter().map(|a| a.as_u64().unwrap()).collect();
            (c["people"].as_u64().unwrap(), active)
        })
        .collect()
}

/// The hand-computed data: six people around `t`.
fn hand_events(t: i64) -> Vec<Ev> {
    let rows: [(&str, i64, &'static str, &'static str); 21] = [
        // alice: all three steps, 5 minutes apart.
        ("alice", 0, "view", "/a"),
        ("alice", 5 * MIN, "signup", "/a"),
        ("alice", 10 * MIN, "purchase", "/a"),
        // bob: purchase before signup: two steps.
        ("bob", HOUR, "view", "/b"),
        ("bob", 2 * HOUR, "purchase", "/b"),
        ("bob", 3 * HOUR, "signup", "/b"),
        // carol: signs up after the one-day window: one step; again on day 2.
        ("carol", 0, "view", "/a"),
        ("carol", 2 * DAY, "signup", "/a"),
        // dave: no view: no step.
        ("dave", 0, "signup", "/a"),
        ("dave", MIN, "purchase", "/a"),
        // erin: the first view is too early, the second starts the attempt.
        ("erin", 0, "view", "/b"),
        ("erin", 3 * DAY, "view", "/a"),
        ("erin", 3 * DAY + HOUR, "signup", "/a"),
        ("erin", 3 * DAY + 3 * HOUR, "purchase", "/a"),
        // frank: two steps, 30 minutes.
        ("frank", HOUR, "view", "/b"),
        ("frank", HOUR + 30 * MIN, "signup", "/b"),
        // gina: seen before the range, so in no cohort.
        ("gina", -2 * DAY, "view", "/a"),
        ("gina", DAY, "view", "/a"),
        // hank: first seen on day 1, back on days 2 and 3.
        ("hank", DAY + HOUR, "view", "/a"),
        ("hank", 2 * DAY + HOUR, "view", "/a"),
        ("hank", 3 * DAY + HOUR, "view", "/a"),
    ];
    let mut out: Vec<Ev> = rows
        .iter()
        .enumerate()
        .map(|(i, (who, dt, name, page))| Ev {
            ts: t + dt,
            seq: i,
            name,
            person: (*who).to_owned(),
            page,
            plan: None,
        })
        .collect();
    // ivy: first seen on day 2.
    out.push(Ev {
        ts: t + 2 * DAY + 5 * HOUR,
        seq: out.len(),
        name: "view",
        person: "ivy".into(),
        page: "/b",
        plan: None,
    });
    out
}

#[tokio::test]
async fn funnels_and_retention_match_hand_computed_answers() {
    each_backend("funnels_hand", &[], async |server| {
        let now = orrery_core::event::now_ms();
        let t = (now / DAY - 10) * DAY;
        let keys = server.keys.clone();
        send(server, &keys.public_key, &hand_events(t)).await;
        let range = format!("from={t}&to={}", t + 4 * DAY);
        let three = "step=view&step=signup&step=purchase";

        let f = get(
            server,
            "funnel",
            &format!("{range}&{three}&window_secs=86400"),
        )
        .await;
        assert_eq!(
            steps(&f["steps"]),
            vec![
                // Everyone with a view in the range (gina, hank and ivy too).
                (8, None, None),
                // alice 5 min, bob 2 h, erin 1 h, frank 30 min.
                (4, Some(30 * MIN), Some(53.75 * MIN as f64)),
                // alice 5 min, erin 2 h.
                (2, Some(5 * MIN), Some(62.5 * MIN as f64)),
            ],
            "{f}"
        );
        let s = &f["steps"];
        assert_eq!(s[1]["conversion_rate"], 0.5);
        assert_eq!(s[2]["conversion_rate"], 0.25);
        assert_eq!(s[2]["step_conversion_rate"], 0.5);
        assert_eq!(
            (s[1]["dropped"].as_u64(), s[2]["dropped"].as_u64()),
            (Some(4), Some(2))
        );
        assert_eq!(f["window_secs"], 86400);
        assert!(f.get("groups").is_none());

        // Broken down by the page of the first step (erin's second view).
        let f = get(
            server,
            "funnel",
            &format!("{range}&{three}&window_secs=86400&by=page"),
        )
        .await;
        let groups: Vec<(String, Vec<u64>)> = f["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["value"].as_str().unwrap().to_owned(),
                    steps(&g["steps"]).iter().map(|s| s.0).collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![("/a".into(), vec![5, 2, 2]), ("/b".into(), vec![3, 2, 0])],
            "{f}"
        );
        assert_eq!(f["total_values"], 2);

        // A condition on step 1 only: erin's first view is the only one
        // that counts, and her signup is outside the window from it.
        let f = get(
            server,
            "funnel",
            &format!("{range}&{three}&window_secs=86400&step_filter=1:page:eq:%2Fb"),
        )
        .await;
        let people: Vec<u64> = steps(&f["steps"]).iter().map(|s| s.0).collect();
        assert_eq!(people, vec![4, 2, 0], "{f}");
        // The default window (14 days) lets carol and erin's first view
        // convert.
        let f = get(server, "funnel", &format!("{range}&step=view&step=signup")).await;
        let people: Vec<u64> = steps(&f["steps"]).iter().map(|s| s.0).collect();
        assert_eq!(people, vec![8, 5], "{f}");

        // Retention by UTC day over days 0 to 3.
        let r = get(server, "retention", &format!("{range}&period=day")).await;
        assert_eq!(
            cohorts(&r),
            vec![
                (6, vec![6, 0, 1, 1]),
                (1, vec![1, 1, 1]),
                (1, vec![1, 0]),
                (0, vec![0]),
            ],
            "{r}"
        );
        assert_eq!(r["cohorts"][0]["rates"], json!([1.0, 0.0, 0.1667, 0.1667]));
        let r = get(
            server,
            "retention",
            &format!("{range}&period=day&return_event=purchase"),
        )
        .await;
        assert_eq!(
            cohorts(&r),
            vec![
                (6, vec![3, 0, 0, 1]),
                (1, vec![0, 0, 0]),
                (1, vec![0, 0]),
                (0, vec![0]),
            ],
            "{r}"
        );
        // The same through the filtered path (a filter every event passes).
        for filter in ["", "&filter=page:neq:%2Fz"] {
            let r = get(
                server,
                "retention",
                &format!("{range}&period=day&cohort_event=signup&periods=2{filter}"),
            )
            .await;
            assert_eq!(
                cohorts(&r),
                vec![
                    (4, vec![4, 0]),
                    (0, vec![0, 0]),
                    (1, vec![1, 0]),
                    (1, vec![1])
                ],
                "{filter}: {r}"
            );
        }
    })
    .await;
}

/// People over five weeks: each visits on some days, views pages, some
/// sign up and buy; plans on some events.
fn generate(rng: &mut Lcg, t0: i64, people: u64, tag: &str, seq: &mut usize) -> Vec<Ev> {
    const PAGES: [&str; 3] = ["/", "/pricing", "/docs"];
    const NAMES: [&str; 4] = ["view", "view", "signup", "purchase"];
    let mut out = Vec::new();
    for p in 0..people {
        let first_day = rng.next(35) as i64;
        for _ in 0..=rng.next(4) {
            let day = (first_day + rng.next(20) as i64).min(34);
            let mut ts = t0 + day * DAY + rng.next(24) as i64 * HOUR + rng.next(60) as i64 * MIN;
            for _ in 0..=rng.next(5) {
                *seq += 1;
                out.push(Ev {
                    ts,
                    seq: *seq,
                    name: NAMES[rng.next(4) as usize],
                    person: format!("{tag}{p}"),
                    page: PAGES[rng.next(3) as usize],
                    plan: (rng.next(3) == 0).then_some(if rng.next(2) == 0 {
                        "pro"
                    } else {
                        "team"
                    }),
                });
                ts += rng.next(6) as i64 * 20 * MIN;
            }
        }
    }
    out
}

/// Which events a step (or a retention table) takes.
type Keep<'a> = &'a dyn Fn(&Ev) -> bool;
/// A funnel case: the query, its steps as computed here, the window.
type Case<'a> = (String, Vec<(&'a str, Keep<'a>)>, i64);
/// A funnel case broken down: the query, its steps, the value of an event.
type ByCase<'a> = (&'a str, Vec<(&'a str, Keep<'a>)>, &'a dyn Fn(&Ev) -> String);
/// An attempt: its last step, start (time, arrival), step times, value.
type Attempt = (usize, (i64, usize), Vec<i64>, String);

/// The funnel computed by brute force: per person, every first-step event
/// as a start, each later step the earliest event after the one before
/// within the window; the furthest, then the latest start, wins.
fn brute_funnel(
    events: &[Ev],
    from: i64,
    to: i64,
    steps: &[(&str, Keep)],
    window: i64,
    by: Option<&dyn Fn(&Ev) -> String>,
) -> BTreeMap<String, Vec<(u64, Vec<i64>)>> {
    let mut per: HashMap<&str, Vec<&Ev>> = HashMap::new();
    for e in events.iter().filter(|e| e.ts >= from && e.ts < to) {
        per.entry(&e.person).or_default().push(e);
    }
    let mut out: BTreeMap<String, Vec<(u64, Vec<i64>)>> = BTreeMap::new();
    for evs in per.values_mut() {
        evs.sort_by_key(|e| (e.ts, e.seq));
        let matches = |e: &Ev, k: usize| e.name == steps[k].0 && (steps[k].1)(e);
        // (last step, start, step times, breakdown value)
        let mut best: Option<Attempt> = None;
        for (i, start) in evs.iter().enumerate().filter(|(_, e)| matches(e, 0)) {
            let mut times = vec![start.ts];
            let mut j = i + 1;
            while times.len() < steps.len() {
                let k = times.len();
                match evs[j..].iter().position(|e| matches(e, k)) {
                    Some(p) if evs[j + p].ts - start.ts <= window => {
                        times.push(evs[j + p].ts);
                        j += p + 1;
                    }
                    _ => break,
                }
            }
            let level = times.len() - 1;
            let key = (start.ts, start.seq);
            if best.as_ref().is_none_or(|b| (level, key) >= (b.0, b.1)) {
                let value = by.map_or(String::new(), |f| f(start));
                best = Some((level, key, times, value));
            }
        }
        if let Some((level, _, times, value)) = best {
            let row = out
                .entry(value)
                .or_insert_with(|| vec![(0, Vec::new()); steps.len()]);
            for k in 0..=level {
                row[k].0 += 1;
                if k > 0 {
                    row[k].1.push(times[k] - times[k - 1]);
                }
            }
        }
    }
    out
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// The retention table computed here: cohorts by the local week (from
/// Monday, in `tz`) of each person's first `keep` event, activity by week.
fn brute_retention(
    events: &[Ev],
    from: i64,
    to: i64,
    tz: chrono_tz::Tz,
    keep: &dyn Fn(&Ev) -> bool,
) -> Vec<(u64, Vec<u64>)> {
    let week = |t: i64| {
        let d = chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .with_timezone(&tz)
            .date_naive();
        let monday = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
        tz.from_local_datetime(&monday.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp_millis()
    };
    let mut starts = vec![week(from)];
    while week(*starts.last().unwrap() + 8 * DAY) < to {
        starts.push(week(*starts.last().unwrap() + 8 * DAY));
    }
    let index = |t: i64| starts.iter().position(|s| *s == week(t)).unwrap();
    let mut first: HashMap<&str, i64> = HashMap::new();
    for e in events.iter().filter(|e| e.ts < to && keep(e)) {
        let f = first.entry(&e.person).or_insert(e.ts);
        *f = (*f).min(e.ts);
    }
    let mut active: HashSet<(&str, usize)> = HashSet::new();
    for e in events
        .iter()
        .filter(|e| e.ts >= starts[0] && e.ts < to && keep(e))
    {
        active.insert((&e.person, index(e.ts)));
    }
    let mut out: Vec<(u64, Vec<u64>)> = (0..starts.len())
        .map(|i| (0, vec![0; starts.len() - i]))
        .collect();
    for (person, t) in &first {
        if *t < starts[0] {
            continue;
        }
        let c = index(*t);
        out[c].0 += 1;
        for k in 0..starts.len() - c {
            if active.contains(&(*person, c + k)) {
                out[c].1[k] += 1;
            }
        }
    }
    out
}

#[tokio::test]
async fn funnels_and_retention_equal_a_brute_force_count() {
    // The rollup job is off: the test rolls the hours up itself, so that
    // each check reads what it says (raw events, the person index, or both).
    let env = [("ORRERY_ANALYTICS__ROLLUP_INTERVAL_SECS", "0")];
    each_backend("funnels_generated", &env, async |server| {
        let now = orrery_core::event::now_ms();
        let t0 = (now / DAY - 36) * DAY;
        let mut seq = 0;
        let mut events = generate(&mut Lcg(11), t0, 150, "p", &mut seq);
        events.retain(|e| e.ts < now);
        let keys = server.keys.clone();
        let other = server.create_project(&keys.secret_key, "noise").await;
        let noise = generate(&mut Lcg(5), t0, 40, "p", &mut 0);
        send(server, &other.public_key, &noise).await;
        send(server, &keys.public_key, &events).await;
        marked(server, over_hours(&noise, now) + over_hours(&events, now)).await;
        let (from, to) = (t0 + 3 * DAY + 5 * HOUR, now + 1);
        check_generated(server, &events, from, to, "raw events").await;
        let rebuild = || {
            let (ok, out, err) = server.cli(&["rollups", "rebuild"]);
            assert!(ok, "{out} {err}");
        };
        rebuild();
        let (ok, out, err) = server.cli(&["stats", "--json"]);
        assert!(ok, "{err}");
        let s: Value = serde_json::from_str(out.trim()).unwrap();
        assert!(s["persons"].as_u64().unwrap() >= 150, "{s}");
        assert!(s["person_index_bytes"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["rollup_pending_hours"], 0, "{s}");
        check_generated(server, &events, from, to, "person index").await;
        // Late events: people first seen long before, sent last. Their
        // hours are marked (read raw), and their people have no numbers.
        let mut late = generate(&mut Lcg(13), t0 - 7 * DAY, 20, "late", &mut seq);
        late.retain(|e| e.ts < now);
        send(server, &keys.public_key, &late).await;
        // The rebuild left no marks: wait for those of the late events.
        marked(server, over_hours(&late, now)).await;
        events.extend(late);
        check_generated(server, &events, from, to, "index and late events").await;
        rebuild();
        check_generated(server, &events, from, to, "rebuilt index").await;
    })
    .await;
}

/// The hours of `events` that are over at `now`.
fn over_hours(events: &[Ev], now: i64) -> usize {
    let hours: HashSet<i64> = events
        .iter()
        .map(|e| e.ts / HOUR)
        .filter(|h| *h < now / HOUR)
        .collect();
    hours.len()
}

/// Waits until at least `hours` hours that are over are marked for the
/// rollup job (the writer marks them once a second, with the sessions), so
/// that the person index is no longer read for them.
async fn marked(server: &Server, hours: usize) {
    for _ in 0..100 {
        let (ok, out, err) = server.cli(&["stats", "--json"]);
        assert!(ok, "{err}");
        let s: Value = serde_json::from_str(out.trim()).unwrap();
        if s["rollup_pending_hours"].as_u64().unwrap() >= hours as u64 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the hours of the events sent were not marked within 10 s");
}

/// Every generated funnel and retention, compared with the brute force
/// count of `events`; `when` names the state of the data.
async fn check_generated(server: &Server, events: &[Ev], from: i64, to: i64, when: &str) {
    let range = format!("from={from}&to={to}");
    let any = |_: &Ev| true;
    let pricing = |e: &Ev| e.page == "/pricing";
    let pro = |e: &Ev| e.plan == Some("pro");
    let cases: Vec<Case> = vec![
        (
            "step=view&step=signup&step=purchase&window_secs=7200".into(),
            vec![("view", &any), ("signup", &any), ("purchase", &any)],
            2 * HOUR,
        ),
        (
            "step=view&step=view&step=purchase&step_filter=2:page:eq:%2Fpricing".into(),
            vec![("view", &any), ("view", &pricing), ("purchase", &any)],
            14 * DAY,
        ),
        (
            "step=signup&step=purchase&window_secs=86400&filter=properties.plan:eq:pro".into(),
            vec![("signup", &pro as &dyn Fn(&Ev) -> bool), ("purchase", &pro)],
            DAY,
        ),
        // Without filters, from the index: a first step that is also a
        // later one (everyone who viewed may view again), and a rare first
        // step before the common one.
        (
            "step=view&step=view&step=signup&window_secs=3600".into(),
            vec![("view", &any), ("view", &any), ("signup", &any)],
            HOUR,
        ),
        (
            "step=signup&step=view&window_secs=86400".into(),
            vec![("signup", &any), ("view", &any)],
            DAY,
        ),
    ];
    for (query, steps_here, window) in &cases {
        let want = brute_funnel(events, from, to, steps_here, *window, None);
        let want = &want[""];
        let f = get(server, "funnel", &format!("{range}&{query}")).await;
        let got = steps(&f["steps"]);
        assert!(want[0].0 > 5, "{query}: the data has too few starts");
        for (k, (people, times)) in want.iter().enumerate() {
            assert_eq!(got[k].0, *people, "{when}: {query}: step {}: {f}", k + 1);
            assert_eq!(
                got[k].1,
                median(times.clone()),
                "{when}: {query}: median of step {}",
                k + 1
            );
        }
    }
    // Broken down by the first step's plan property (raw events), by its
    // page (from the index's values, raw where it has none), and by page
    // with a filter on every step (`page` is not `/docs`) and one on the
    // second (its page is `/pricing`).
    let plan = |e: &Ev| e.plan.unwrap_or("").to_owned();
    let page = |e: &Ev| e.page.to_owned();
    let not_docs = |e: &Ev| e.page != "/docs";
    let pricing_not_docs = |e: &Ev| e.page == "/pricing";
    let broken: [ByCase; 3] = [
        (
            "step=view&step=signup&window_secs=86400&by=properties.plan",
            vec![("view", &any), ("signup", &any)],
            &plan,
        ),
        (
            "step=view&step=signup&window_secs=86400&by=page",
            vec![("view", &any), ("signup", &any)],
            &page,
        ),
        (
            "step=view&step=view&step=purchase&window_secs=86400&by=page\
             &filter=page:neq:%2Fdocs&step_filter=2:page:eq:%2Fpricing",
            vec![
                ("view", &not_docs),
                ("view", &pricing_not_docs),
                ("purchase", &not_docs),
            ],
            &page,
        ),
    ];
    for (query, steps_here, by) in &broken {
        let want = brute_funnel(events, from, to, steps_here, DAY, Some(*by));
        let f = get(server, "funnel", &format!("{range}&{query}&limit=100")).await;
        let got: BTreeMap<String, Vec<(u64, Option<i64>)>> = f["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["value"].as_str().unwrap_or("").to_owned(),
                    steps(&g["steps"]).iter().map(|s| (s.0, s.1)).collect(),
                )
            })
            .collect();
        let want: BTreeMap<String, Vec<(u64, Option<i64>)>> = want
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|s| (s.0, median(s.1))).collect()))
            .collect();
        assert!(want.len() >= 2, "{query}: too few groups");
        assert_eq!(got, want, "{when}: {query}: {f}");
        let total: u64 = want.values().map(|v| v[0].0).sum();
        assert_eq!(steps(&f["steps"])[0].0, total, "{when}: {query}: {f}");
    }

    // Weekly retention from a local Monday, with and without a property
    // filter or a page filter (first seen among those events then; the
    // index answers the page filter from its values), in New York and in
    // Kolkata (UTC+5:30: the hours that weeks cut are read raw).
    for zone in ["America/New_York", "Asia/Kolkata"] {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        for (filter, keep) in [
            ("", &any as &dyn Fn(&Ev) -> bool),
            ("&filter=properties.plan:eq:pro", &pro),
            ("&filter=page:neq:%2Fdocs", &not_docs),
        ] {
            let r = get(
                server,
                "retention",
                &format!(
                    "{range}&period=week&tz={}{filter}",
                    zone.replace('/', "%2F")
                ),
            )
            .await;
            let want = brute_retention(events, from, to, tz, keep);
            assert!(want.iter().map(|c| c.0).sum::<u64>() > 10, "too few people");
            assert_eq!(cohorts(&r), want, "{when}: {zone} retention{filter}: {r}");
            let start = chrono::DateTime::parse_from_rfc3339(r["from"].as_str().unwrap())
                .unwrap()
                .with_timezone(&tz);
            assert_eq!(start.weekday(), chrono::Weekday::Mon);
            assert_eq!(start.format("%H:%M").to_string(), "00:00");
        }
    }
}

#[tokio::test]
async fn bad_funnel_and_retention_queries_are_400s_naming_the_parameter() {
    let server = Server::sqlite(&[]).await;
    let keys = server.keys.clone();
    let p = &keys.project_id;
    let cases = [
        ("funnel?step=a", "step"),
        (
            "funnel?step=a&step=b&step_filter=3:page:eq:x",
            "step_filter",
        ),
        (
            "funnel?step=a&step=b&step_filter=0:page:eq:x",
            "step_filter",
        ),
        ("funnel?step=a&step=b&step_filter=page:eq:x", "step_filter"),
        ("funnel?step=a&step=b&window_secs=0", "window_secs"),
        ("funnel?step=a&step=b&window_secs=99999999", "window_secs"),
        ("funnel?step=a&step=b&by=entry_page", "by"),
        ("funnel?step=a&step=b&filter=exit_page:eq:x", "filter"),
        (
            "funnel?step=a&step=b&step_filter=1:entry_page:eq:x",
            "step_filter",
        ),
        ("funnel?step=a&step=b&by=colour", "by"),
        ("funnel?step=a&step=b&range=1w", "range"),
        ("retention?period=hour", "period"),
        ("retention?periods=0", "periods"),
        ("retention?periods=101", "periods"),
        ("retention?period=day&from=0&to=4000000000000", "period"),
        ("retention?tz=Nowhere%2FLand", "tz"),
        ("retention?cohort_event=", "cohort_event"),
    ];
    for (query, parameter) in cases {
        let path = format!("/api/v1/projects/{p}/stats/{query}");
        let (status, body) = server.get(&path, &keys.secret_key).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{parameter}`")),
            "{query}: {message}"
        );
    }
    // Twenty-one steps: too many.
    let many = vec!["step=a"; 21].join("&");
    let (status, body) = server
        .get(
            &format!("/api/v1/projects/{p}/stats/funnel?{many}"),
            &keys.secret_key,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Another project's key: 404 (to it the project does not exist); the
    // public key: 403; no key: 401; no such project: 404; an empty
    // project: zeros.
    let other = server.create_project(&keys.secret_key, "other").await;
    for what in ["funnel?step=a&step=b", "retention"] {
        let path = format!("/api/v1/projects/{p}/stats/{what}");
        let (status, body) = server.get(&path, &other.secret_key).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{what}"
        );
        let (status, _) = server.get(&path, &keys.public_key).await;
        assert_eq!(status, 403, "{what}");
        let (status, _) = server.get(&path, "").await;
        assert_eq!(status, 401, "{what}");
        let missing = format!("/api/v1/projects/00000000-0000-0000-0000-000000000000/stats/{what}");
        let (status, _) = server.get(&missing, &keys.secret_key).await;
        assert_eq!(status, 404, "{what}");
        let (status, body) = server.get(&path, &keys.secret_key).await;
        assert_eq!(status, 200, "{what}: {body}");
    }
}
