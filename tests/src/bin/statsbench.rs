//! Benchmark (not a test) of the statistics queries: loads N realistic
//! events spread over 90 days into a fresh database through the writer
//! (enrichment already filled in, as the built-in plugins would), builds
//! the rollups, then times overview (30 days), time series (30 days,
//! daily), breakdown by page (30 days), a filtered breakdown, a 3-step
//! funnel (30 days; also filtered and broken down by country) and weekly
//! retention (12 weeks; also filtered by country), cold (a
//! new connection pool, empty page cache) and warm (the median of the
//! following runs), and prints the table with the database size.
//!
//! ```sh
//! cargo run --release -p orrery-tests --bin orrery-statsbench -- --events 1000000
//! cargo run --release -p orrery-tests --bin orrery-statsbench -- --events 1000000 \
//!     --database-url postgres://postgres@127.0.0.1/statsbench --create-db
//! ```
#![allow(clippy::unwrap_used)] // benchmark code: a failed unwrap fails the run

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use orrery_core::analytics::query::{self, Interval, Query};
use orrery_core::analytics::{Dimension, HOUR_MS, funnel, retention, rollup};
use orrery_core::config::Config;
use orrery_core::event::{Event, now_ms};
use orrery_core::metrics::CoreMetrics;
use orrery_core::store::Store;
use orrery_core::writer::{Writer, WriterConfig};
use orrery_tests::Lcg;
use serde_json::{Map, Value, json};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "orrery-statsbench",
    about = "Times the statistics queries on generated data"
)]
struct Args {
    /// Events to load.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Days they are spread over, ending now.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// PostgreSQL URL (default: SQLite in --data-dir).
    #[arg(long)]
    database_url: Option<String>,
    /// With --database-url: drop and create that database first.
    #[arg(long)]
    create_db: bool,
    /// Data directory (default: a temporary one, removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Reuse the data already in --data-dir / --database-url (no loading).
    #[arg(long)]
    reuse: bool,
    /// With --reuse: rebuild the rollups and the person index first.
    #[arg(long)]
    rebuild: bool,
    /// Also time the funnel and retention with every hour marked (read
    /// from raw events instead of the person index); the marks are
    /// removed afterwards.
    #[arg(long)]
    compare_raw: bool,
    /// Load sessions at random times across the days, instead of in the
    /// order they start, as a live site sends them (where an hour's
    /// events lie together in the events table): the layout of the
    /// figures before 2026-12.
    #[arg(long)]
    random_order: bool,
    /// With --reuse: time the queries as of just after the data's last
    /// event, as a fresh run does, instead of as of now (hours after a
    /// load, the current hour and the last hours are empty).
    #[arg(long)]
    at_data_end: bool,
    /// Read the person index by hour alone, as before it had rows by day
    /// (every day is marked for the run, so that its hours are read, and
    /// the marks removed afterwards; the statistics read hourly rollups
    /// then too): to compare funnels and retention with the index by day.
    #[arg(long)]
    hour_index: bool,
    /// Warm runs per query (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Time only the queries whose name contains this (e.g. to profile
    /// one).
    #[arg(long)]
    only: Option<String>,
}

const PAGES: usize = 200;
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CA"];
const BROWSERS: [&str; 4] = ["Chrome", "Safari", "Firefox", "Edge"];
const SOURCES: [(&str, Option<&str>); 4] = [
    ("direct", None),
    ("search", Some("www.google.com")),
    ("social", Some("news.ycombinator.com")),
    ("other", Some("blog.example.org")),
];

fn main() {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(args));
}

async fn open(config: &Config) -> Store {
    let store = Store::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn run(args: Args) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().to_owned()),
        database_url: args.database_url.clone(),
        ..Config::default()
    };
    config.database.max_connections = 8;
    if args.create_db
        && let Some(url) = &args.database_url
    {
        let (base, name) = url.rsplit_once('/').unwrap();
        let admin = format!("{base}/postgres");
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let store = open(&config).await;
    let now = if args.reuse && args.at_data_end {
        use sea_orm::ConnectionTrait;
        let row = store
            .db()
            .query_one(sea_orm::Statement::from_string(
                store.backend(),
                "SELECT MAX(\"timestamp\") FROM events",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<Option<i64>>(0).unwrap().unwrap_or(0) + 1
    } else {
        now_ms()
    };
    let project = if args.reuse && !args.rebuild {
        // What the rollup job does after an upgrade: the marked hours,
        // then the daily rollups of the days that are over.
        let started = Instant::now();
        let (mut hours, mut days) = (0, 0);
        let mut recent = rollup::RecentRedos::new(0);
        loop {
            let (redone, _, made) = rollup::redo_due(&store, now, 1000, &mut recent)
                .await
                .unwrap();
            (hours, days) = (hours + redone, days + made);
            if redone == 0 && made == 0 {
                break;
            }
        }
        if hours + days > 0 {
            println!(
                "upgrade: {hours} hours redone and {days} days made in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        store.list_projects(None).await.unwrap()[0].id
    } else {
        let project = if args.reuse {
            store.list_projects(None).await.unwrap()[0].id
        } else {
            let project = store.create_project("bench").await.unwrap().id;
            load(&store, &args, project, now).await;
            project
        };
        let started = Instant::now();
        let hours = rollup::rebuild(&store, None, 0, now + 1).await.unwrap();
        println!(
            "rollups of {hours} hours built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        project
    };
    let stats = store.stats().await.unwrap();
    let size = store.rollup_size().await.unwrap();
    let (rows, bytes) = (size.rows + size.hour_packs + size.day_rows, size.bytes);
    println!(
        "{} events; database {:.1} MiB ({:.1} MiB per million events); rollups {rows} rows, about {:.1} MiB",
        stats.events,
        stats.database_bytes as f64 / 1048576.0,
        stats.database_bytes as f64 / 1048576.0 / (stats.events as f64 / 1e6),
        bytes as f64 / 1048576.0
    );
    let (persons, index_bytes) = store.person_index_size().await.unwrap();
    println!(
        "person index: {persons} people, {:.1} MiB ({:.2} bytes per event)",
        index_bytes as f64 / 1048576.0,
        index_bytes as f64 / stats.events.max(1) as f64
    );
    store.close().await;

    let month = Query {
        project,
        from: now - 30 * 24 * HOUR_MS,
        to: now + 1,
        filters: Vec::new(),
    };
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let page = Dimension::parse("page").unwrap();
    let mut filtered = month.clone();
    filtered.filters.push(orrery_core::analytics::Filter {
        dimension: Dimension::parse("country").unwrap(),
        op: orrery_core::analytics::Op::Eq,
        values: vec!["DE".into()],
    });
    let funnel = funnel::Funnel {
        query: month.clone(),
        steps: ["pageview", "signup", "purchase"]
            .map(|e| funnel::Step {
                event: e.into(),
                filters: Vec::new(),
            })
            .to_vec(),
        window_ms: 24 * HOUR_MS,
        breakdown: None,
    };
    let filtered_funnel = funnel::Funnel {
        query: filtered.clone(),
        ..funnel.clone()
    };
    let by_country = funnel::Funnel {
        breakdown: Some(Dimension::parse("country").unwrap()),
        ..funnel.clone()
    };
    let retention = retention::Retention {
        query: Query {
            from: Interval::Week.bucket(tz, now - 11 * 7 * 24 * HOUR_MS),
            ..month.clone()
        },
        period: Interval::Week,
        tz,
        cohort_event: None,
        return_event: None,
        periods: 12,
    };
    let filtered_retention = retention::Retention {
        query: Query {
            filters: filtered.filters.clone(),
            ..retention.query.clone()
        },
        ..retention.clone()
    };
    println!(
        "\nquery (30 days)                       cold ms   warm ms (median of {})",
        args.runs
    );
    let mut names = vec![
        "overview",
        "timeseries",
        "breakdown page",
        "breakdown page, every value",
        "breakdown page, country=DE",
        "funnel, 3 steps",
        "funnel, 3 steps, country=DE",
        "funnel, 3 steps, by country",
        "retention, weekly, 12 weeks",
        "retention, weekly, country=DE",
    ];
    if args.compare_raw {
        names.extend([
            "mark every hour",
            "funnel, 3 steps",
            "funnel, 3 steps, country=DE",
            "funnel, 3 steps, by country",
            "retention, weekly, 12 weeks",
            "retention, weekly, country=DE",
        ]);
    }
    // The answers of funnels and retention, which must not change when
    // they are read from raw events instead of the index.
    let mut answers: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    if let Some(only) = &args.only {
        names.retain(|n| n.contains(only.as_str()) || *n == "mark every hour");
    }
    if args.hour_index {
        let store = open(&config).await;
        mark_days(&store, true).await;
        store.close().await;
        println!("every day marked (the person index read by hour):");
    }
    for name in names {
        if name == "mark every hour" {
            let store = open(&config).await;
            set_marks(&store, true).await;
            store.close().await;
            println!("every hour marked (read from raw events):");
            continue;
        }
        let mut times = Vec::new();
        // Cold: a new pool, so SQLite's page cache starts empty (the OS
        // cache may still hold the file).
        let store = open(&config).await;
        let mut answer = String::new();
        for _ in 0..=args.runs {
            let started = Instant::now();
            match name {
                "overview" => {
                    query::totals(&store, &month, now).await.unwrap();
                    query::totals(&store, &month.previous(), now).await.unwrap();
                }
                "timeseries" => {
                    let buckets = Interval::Day.buckets(tz, month.from, month.to).unwrap();
                    query::timeseries(&store, &month, Interval::Day, tz, buckets, now)
                        .await
                        .unwrap();
                }
                // The first page of 10 (the endpoint's default), and every
                // value (their visitor sets all merged).
                "breakdown page" => {
                    query::breakdown(&store, &month, &page, now, (0, 10))
                        .await
                        .unwrap();
                }
                "breakdown page, every value" => {
                    query::breakdown(&store, &month, &page, now, (0, usize::MAX))
                        .await
                        .unwrap();
                }
                "funnel, 3 steps" => {
                    let a = funnel::run(&store, &funnel, now).await.unwrap();
                    answer = format!(
                        "{:?}",
                        (
                            a.steps.iter().map(|s| s.people).collect::<Vec<_>>(),
                            a.steps
                                .iter()
                                .map(funnel::StepCount::median_ms)
                                .collect::<Vec<_>>()
                        )
                    );
                }
                "funnel, 3 steps, country=DE" => {
                    let a = funnel::run(&store, &filtered_funnel, now).await.unwrap();
                    answer = format!("{:?}", a.steps.iter().map(|s| s.people).collect::<Vec<_>>());
                }
                "funnel, 3 steps, by country" => {
                    let a = funnel::run(&store, &by_country, now).await.unwrap();
                    answer = format!(
                        "{:?}",
                        a.groups
                            .iter()
                            .map(|(v, s)| (
                                v.clone(),
                                s.iter().map(|s| s.people).collect::<Vec<_>>()
                            ))
                            .collect::<Vec<_>>()
                    );
                }
                "retention, weekly, 12 weeks" | "retention, weekly, country=DE" => {
                    let r = if name.contains("DE") {
                        &filtered_retention
                    } else {
                        &retention
                    };
                    let starts = Interval::Week
                        .buckets(tz, r.query.from, r.query.to)
                        .unwrap();
                    let a = retention::run(&store, r, &starts, now).await.unwrap();
                    answer = format!("{a:?}");
                }
                _ => {
                    query::breakdown(
                        &store,
                        &filtered,
                        &Dimension::parse("country").unwrap(),
                        now,
                        (0, 10),
                    )
                    .await
                    .unwrap();
                }
            }
            times.push(started.elapsed());
        }
        store.close().await;
        let cold = times.remove(0);
        times.sort();
        let warm = times[times.len() / 2];
        println!("{name:<36} {:>8.1} {:>9.1}", ms(cold), ms(warm));
        if !answer.is_empty() {
            if let Some(before) = answers.get(name) {
                assert_eq!(before, &answer, "{name}: the index and raw events disagree");
                println!("{:<36} same answer as before", "");
            }
            answers.insert(name, answer);
        }
    }
    if args.compare_raw {
        let store = open(&config).await;
        set_marks(&store, false).await;
        store.close().await;
    }
    if args.hour_index {
        let store = open(&config).await;
        mark_days(&store, false).await;
        store.close().await;
    }
}

/// Marks every day of the person index (version -1, so that its hours
/// are read), or removes those marks.
async fn mark_days(store: &Store, on: bool) {
    use sea_orm::ConnectionTrait;
    let sql = if on {
        "INSERT INTO rollup_days_due (project_id, day, version) \
         SELECT project_id, day, -1 FROM person_days WHERE true ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM rollup_days_due WHERE version = -1"
    };
    store.db().execute_unprepared(sql).await.unwrap();
}

/// Marks every indexed hour for redoing (so queries read raw events), or
/// removes every mark.
async fn set_marks(store: &Store, on: bool) {
    use sea_orm::ConnectionTrait;
    let sql = if on {
        "INSERT INTO rollup_dirty (project_id, hour, version) \
         SELECT project_id, hour, 1 FROM person_hours WHERE true ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM rollup_dirty"
    };
    store.db().execute_unprepared(sql).await.unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Loads `args.events` events over `args.days` days: visitors with
/// sessions of 1 to 8 events a few minutes apart, page views and a few
/// other events, enrichment filled in; sessions in the order they start,
/// or at random times with `--random-order`.
async fn load(store: &Store, args: &Args, project: Uuid, now: i64) {
    let writer = Writer::start(
        store.clone(),
        WriterConfig {
            flush_events: 2000,
            flush_interval: Duration::from_millis(5),
            queue_capacity: 200_000,
            sessions_flush: Duration::from_secs(1),
        },
        CoreMetrics::default(),
    );
    let start = now - args.days * 24 * HOUR_MS;
    let span = (args.days * 24 * HOUR_MS) as u64;
    let mut rng = Lcg(42);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut session = 0u64;
    let visitors = (args.events / 12).max(1);
    let mut pending = Vec::new();
    let mut batch = Vec::with_capacity(1000);
    while sent < args.events {
        session += 1;
        let visitor = rng.next(visitors);
        let offset = if !args.random_order {
            // Spread over the span by progress, a minute of jitter.
            (span as f64 * sent as f64 / args.events as f64) as u64 + rng.next(60_000)
        } else {
            rng.next(span)
        };
        let mut ts = start + offset.min(span - 1) as i64;
        let country = COUNTRIES[rng.next(COUNTRIES.len() as u64) as usize];
        let browser = BROWSERS[rng.next(BROWSERS.len() as u64) as usize];
        let (source, host) = SOURCES[rng.next(SOURCES.len() as u64) as usize];
        let utm = (rng.next(5) == 0).then_some("newsletter");
        for i in 0..=rng.next(8) {
            if sent == args.events || ts >= now {
                break;
            }
            // Zipf-like pages: a few popular ones.
            let top = rng.next(PAGES as u64) + 1;
            let page = format!("/p/{}", rng.next(top));
            let name = if i == 0 || rng.next(4) > 0 {
                "pageview"
            } else if rng.next(3) == 0 {
                "purchase"
            } else {
                "signup"
            };
            let mut enrichment = Map::new();
            enrichment.insert("page_path".into(), Value::from(page.clone()));
            enrichment.insert("page_host".into(), Value::from("shop.example.com"));
            enrichment.insert("country".into(), Value::from(country));
            enrichment.insert("browser".into(), Value::from(browser));
            enrichment.insert("os".into(), Value::from("Linux"));
            enrichment.insert("device_type".into(), Value::from("desktop"));
            enrichment.insert("referrer_source".into(), Value::from(source));
            if let Some(h) = host {
                enrichment.insert("referrer_host".into(), Value::from(h));
            }
            if let Some(u) = utm {
                enrichment.insert("utm_source".into(), Value::from(u));
            }
            let properties = if name == "signup" {
                json!({"plan": if rng.next(2) == 0 { "pro" } else { "team" }})
                    .as_object()
                    .cloned()
                    .unwrap()
            } else {
                Map::new()
            };
            batch.push(Event {
                id: Uuid::now_v7(),
                project_id: project,
                name: name.into(),
                distinct_id: Some(format!("v{visitor}")),
                session_id: Some(format!("s{session}")),
                timestamp: ts,
                received_at: now,
                url: Some(format!("https://shop.example.com{page}")),
                referrer: host.map(|h| format!("https://{h}/")),
                user_agent: None,
                properties,
                ip_hash: None,
                visitor_id: None,
                enrichment,
            });
            sent += 1;
            ts += (30 + rng.next(300)) as i64 * 1000;
            if batch.len() == 1000 {
                let w = writer.clone();
                let events = std::mem::take(&mut batch);
                pending.push(tokio::spawn(
                    async move { w.write(events, Vec::new()).await },
                ));
                if pending.len() >= 32 {
                    for p in pending.drain(..) {
                        p.await.unwrap().unwrap();
                    }
                }
            }
        }
    }
    if !batch.is_empty() {
        writer.write(batch, Vec::new()).await.unwrap();
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    writer.close().await;
    println!(
        "loaded {sent} events ({session} sessions) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
