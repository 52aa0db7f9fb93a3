//! The store and the group-commit writer on real SQLite files and the
//! local PostgreSQL (when `ORRERY_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::sync::Arc;
use std::time::Duration;

use orrery_core::config::Config;
use orrery_core::event::{Event, EventBuilder, now_ms};
use orrery_core::metrics::CoreMetrics;
use orrery_core::store::{EncodedEvent, EventFilter, KeyKind, PendingSessions, Session, Store};
use orrery_core::writer::{WriteError, WriteOutcome, Writer, WriterConfig};
use orrery_tests::{Backend, TestDatabase, backends};
use sea_orm::{ConnectionTrait, DatabaseBackend};
use uuid::Uuid;

async fn open(backend: Backend, dir: &tempfile::TempDir) -> (Store, TestDatabase) {
    let db = TestDatabase::create(backend).await;
    let config = Config {
        data_dir: dir.path().to_owned(),
        database_url: db.url.clone(),
        ..Config::default()
    };
    let store = Store::connect(&config).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, db)
}

fn event(project: Uuid, name: &str) -> Event {
    EventBuilder::new(name)
        .project(project)
        .field("properties", serde_json::json!({"k": 1}))
        .event()
}

fn writer(store: &Store, interval_ms: u64, capacity: usize) -> (Writer, CoreMetrics) {
    writer_with_sessions(store, interval_ms, capacity, Duration::from_secs(1))
}

fn writer_with_sessions(
    store: &Store,
    interval_ms: u64,
    capacity: usize,
    sessions_flush: Duration,
) -> (Writer, CoreMetrics) {
    let metrics = CoreMetrics::default();
    let w = Writer::start(
        store.clone(),
        WriterConfig {
            flush_events: 10_000,
            flush_interval: Duration::from_millis(interval_ms),
            queue_capacity: capacity,
            sessions_flush,
        },
        metrics.clone(),
    );
    (w, metrics)
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_all_land() {
    for backend in backends("concurrent_writes_share_commits_and_all_land") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap();
        let (writer, metrics) = writer(&store, 20, 10_000);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let w = writer.clone();
            let events: Vec<Event> = (0..10).map(|_| event(project.id, "e")).collect();
            tasks.push(tokio::spawn(
                async move { w.write(events, Vec::new()).await },
            ));
        }
        for t in tasks {
            let outcomes = t.await.unwrap().expect("write");
            assert_eq!(outcomes, vec![WriteOutcome::Inserted; 10]);
        }
        assert_eq!(store.count_events(Some(project.id)).await.unwrap(), 400);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let commits: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("orrery_writer_batch_size_count "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            commits < 40,
            "{backend:?}: 40 writes took {commits} commits; no grouping"
        );
        writer.close().await;
        assert!(matches!(
            writer
                .write(vec![event(project.id, "late")], Vec::new())
                .await,
            Err(WriteError::Closed)
        ));
        store.close().await;
    }
}

/// Makes the database refuse events named `poison`, as a real constraint
/// violation would.
async fn poison_trigger(store: &Store) {
    let stmts: &[&str] = match store.backend() {
        DatabaseBackend::Sqlite => &["CREATE TRIGGER poison BEFORE INSERT ON events \
              WHEN NEW.name = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"],
        _ => &[
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
        ],
    };
    for s in stmts {
        store.db().execute_unprepared(s).await.expect("trigger");
    }
}

#[tokio::test]
async fn an_unstorable_event_goes_to_dead_letters_and_spares_its_neighbours() {
    for backend in backends("an_unstorable_event_goes_to_dead_letters_and_spares_its_neighbours") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        poison_trigger(&store).await;
        let project = store.create_project("p").await.unwrap();
        let (writer, metrics) = writer(&store, 30, 10_000);
        // Three requests land in one group; one carries a poisoned event.
        let w = Arc::new(writer);
        let a = {
            let w = w.clone();
            let events = vec![event(project.id, "a1"), event(project.id, "a2")];
            tokio::spawn(async move { w.write(events, Vec::new()).await })
        };
        let b = {
            let w = w.clone();
            let events = vec![
                event(project.id, "b1"),
                event(project.id, "poison"),
                event(project.id, "b3"),
            ];
            tokio::spawn(async move { w.write(events, Vec::new()).await })
        };
        let a = a.await.unwrap().unwrap();
        let b = b.await.unwrap().unwrap();
        assert_eq!(a, vec![WriteOutcome::Inserted; 2], "{backend:?}");
        assert_eq!(b[0], WriteOutcome::Inserted);
        assert!(
            matches!(&b[1], WriteOutcome::DeadLettered(e) if e.contains("poisoned event")),
            "{b:?}"
        );
        assert_eq!(b[2], WriteOutcome::Inserted);
        let page = store
            .query_events(project.id, &EventFilter::default(), 100)
            .await
            .unwrap();
        let mut names: Vec<String> = page.events.into_iter().map(|e| e.event.name).collect();
        names.sort();
        assert_eq!(names, ["a1", "a2", "b1", "b3"], "{backend:?}");
        assert_eq!(store.stats().await.unwrap().dead_letters, 1);
        assert_eq!(metrics.commit_failures.get(), 1);
        w.close().await;
        store.close().await;
    }
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = open(Backend::Sqlite, &dir).await;
    let project = store.create_project("p").await.unwrap();
    let (writer, _) = writer(&store, 0, 5);
    let too_many: Vec<Event> = (0..6).map(|_| event(project.id, "e")).collect();
    assert!(matches!(
        writer.write(too_many, Vec::new()).await,
        Err(WriteError::QueueFull)
    ));
    let fits: Vec<Event> = (0..5).map(|_| event(project.id, "e")).collect();
    assert_eq!(writer.write(fits, Vec::new()).await.unwrap().len(), 5);
    writer.close().await;
}

#[tokio::test]
async fn projects_and_keys_round_trip() {
    for backend in backends("projects_and_keys_round_trip") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let p = store.create_project("site").await.unwrap();
        let k = store
            .create_key(p.id, "web", KeyKind::Public, true)
            .await
            .unwrap();
        assert!(!k.record.admin, "public keys are never admin");
        let found = store
            .find_key_by_hash(&orrery_core::store::keys::hash_key(&k.plaintext))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, k.record.id);
        let rotated = store.rotate_key(p.id, k.record.id, 0).await.unwrap();
        assert_ne!(rotated.plaintext, k.plaintext);
        let keys = store.list_keys(p.id).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().any(|k| k.revoked_at.is_some()));
        store.rename_project(p.id, "site 2").await.unwrap();
        assert_eq!(store.get_project(p.id).await.unwrap().name, "site 2");
        store.delete_project(p.id).await.unwrap();
        assert!(store.list_keys(p.id).await.unwrap().is_empty());
        assert!(store.get_project(p.id).await.is_err());
        store.close().await;
    }
}

#[tokio::test]
async fn a_job_lease_has_one_holder_until_it_expires() {
    for backend in backends("a_job_lease_has_one_holder_until_it_expires") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let later = now_ms() + 60_000;
        assert!(store.acquire_lease("insights", "a", later).await.unwrap());
        assert!(!store.acquire_lease("insights", "b", later).await.unwrap());
        // The holder renews; another job is independent.
        assert!(
            store
                .acquire_lease("insights", "a", later + 1)
                .await
                .unwrap()
        );
        assert!(store.acquire_lease("rollups", "b", later).await.unwrap());
        // An expired lease can be taken over.
        assert!(
            store
                .acquire_lease("expiring", "a", now_ms() - 1)
                .await
                .unwrap()
        );
        assert!(store.acquire_lease("expiring", "b", later).await.unwrap());
        assert!(!store.acquire_lease("expiring", "a", later).await.unwrap());
        store.close().await;
    }
}

#[tokio::test]
async fn stored_pipelines_round_trip_and_reset() {
    use orrery_core::pipeline::StageSpec;
    for backend in backends("stored_pipelines_round_trip_and_reset") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap();
        assert_eq!(store.get_pipeline(project.id).await.unwrap(), None);
        let stages: Vec<StageSpec> = serde_json::from_value(serde_json::json!([
            {"plugin": "ip_hash"},
            {"plugin": "session", "config": {"inactivity_minutes": 5}, "on_error": "dead_letter", "timeout_ms": 20}
        ]))
        .unwrap();
        store.put_pipeline(project.id, &stages, &[]).await.unwrap();
        store
            .put_pipeline(project.id, &stages[..1], &[])
            .await
            .unwrap();
        store.put_pipeline(project.id, &stages, &[]).await.unwrap();
        let got = store.get_pipeline(project.id).await.unwrap().unwrap();
        assert_eq!(got.stages, stages);
        store.delete_pipeline(project.id).await.unwrap();
        assert_eq!(store.get_pipeline(project.id).await.unwrap(), None);
        store.close().await;
    }
}

/// A page view (or `click`) in session `sid` at `t` ms on `path`.
fn session_event(project: Uuid, name: &str, sid: &str, t: i64, path: &str) -> Event {
    EventBuilder::new(name)
        .project(project)
        .session(sid)
        .at(t)
        .field("distinct_id", format!("user-{sid}"))
        .field("url", format!("https://a.test{path}"))
        .event()
}

async fn sessions_of(store: &Store, project: Uuid) -> Vec<Session> {
    let mut all = store
        .list_sessions(project, None, None, None, 100)
        .await
        .unwrap();
    all.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    all
}

async fn marks(store: &Store) -> i64 {
    let row = store
        .db()
        .query_one(sea_orm::Statement::from_string(
            store.backend(),
            "SELECT COUNT(*) AS n FROM session_marks",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

#[tokio::test]
async fn sessions_are_written_by_interval_and_at_shutdown_and_recovered_after_a_crash() {
    for backend in
        backends("sessions_are_written_by_interval_and_at_shutdown_and_recovered_after_a_crash")
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let t = 1_795_430_000_000;

        // Written at the interval: visible while the writer runs.
        let (w, _) = writer_with_sessions(&store, 2, 10_000, Duration::from_millis(50));
        w.write(
            vec![session_event(project, "pageview", "s0", t, "/zero")],
            Vec::new(),
        )
        .await
        .unwrap();
        let mut waited = 0;
        while sessions_of(&store, project).await.is_empty() {
            assert!(
                waited < 100,
                "{backend:?}: the session was not written within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        w.close().await;

        // Written at shutdown, long before the interval.
        let (w, _) = writer_with_sessions(&store, 2, 10_000, Duration::from_secs(3600));
        let first = vec![
            session_event(project, "pageview", "s1", t + 1000, "/b"),
            session_event(project, "pageview", "s1", t, "/a"),
            session_event(project, "click", "s1", t + 5000, "/b"),
            session_event(project, "pageview", "s2", t, "/x"),
        ];
        let retry = first[0].clone();
        w.write(first, Vec::new()).await.unwrap();
        // A retried event is a duplicate and is not counted again.
        assert_eq!(
            w.write(vec![retry], Vec::new()).await.unwrap(),
            vec![WriteOutcome::Duplicate]
        );
        w.close().await;
        let s = sessions_of(&store, project).await;
        assert_eq!(s.len(), 3, "{backend:?}: {s:?}");
        assert_eq!((s[1].events, s[1].pageviews, s[1].bounce), (3, 2, false));
        assert_eq!(
            (s[1].started_at, s[1].ended_at, s[1].duration_ms),
            (t, t + 5000, 5000)
        );
        assert_eq!(s[1].entry_page.as_deref(), Some("https://a.test/a"));
        assert_eq!(s[1].exit_page.as_deref(), Some("https://a.test/b"));
        assert_eq!((s[2].events, s[2].bounce), (1, true));
        assert_eq!(
            marks(&store).await,
            0,
            "{backend:?}: a clean stop leaves no mark"
        );

        // A crash: a writer renewed its mark an hour ago, then stored
        // events whose sessions it never wrote.
        let dead = Uuid::new_v4();
        let hour_ago = now_ms() - 3_600_000;
        store
            .writer_db()
            .flush_sessions(&PendingSessions::default(), dead, hour_ago, 0)
            .await
            .unwrap();
        let lost: Vec<EncodedEvent> = vec![
            session_event(project, "pageview", "s1", t + 9000, "/c"),
            session_event(project, "click", "s3", t + 100, "/q"),
            session_event(project, "pageview", "s3", t + 50, "/p"),
        ]
        .into_iter()
        .map(EncodedEvent::new)
        .collect();
        let refs: Vec<&EncodedEvent> = lost.iter().collect();
        store.writer_db().commit(&refs, &[]).await.unwrap();
        assert_eq!(sessions_of(&store, project).await[1].events, 3);

        // The next writer recovers them from the events when it starts.
        let (w, _) = writer_with_sessions(&store, 2, 10_000, Duration::from_secs(3600));
        w.close().await;
        let s = sessions_of(&store, project).await;
        assert_eq!(s.len(), 4, "{backend:?}: {s:?}");
        assert_eq!(
            (s[1].events, s[1].pageviews),
            (4, 3),
            "{backend:?}: {:?}",
            s[1]
        );
        assert_eq!((s[1].started_at, s[1].ended_at), (t, t + 9000));
        assert_eq!(s[1].entry_page.as_deref(), Some("https://a.test/a"));
        assert_eq!(s[1].exit_page.as_deref(), Some("https://a.test/c"));
        assert_eq!(s[1].distinct_id.as_deref(), Some("user-s1"));
        assert_eq!((s[3].events, s[3].pageviews, s[3].bounce), (2, 1, true));
        assert_eq!(s[3].entry_page.as_deref(), Some("https://a.test/p"));
        assert_eq!(s[3].exit_page.as_deref(), Some("https://a.test/q"));
        // Untouched sessions keep what they had.
        assert_eq!(s[2].events, 1);
        assert_eq!(
            marks(&store).await,
            0,
            "{backend:?}: the dead writer's mark is gone"
        );
        store.close().await;
    }
}

/// A query over decades with data on a few days reads those days only
/// (one index seek jumps each empty stretch), and answers as a full scan.
#[tokio::test]
async fn reads_jump_over_empty_stretches_and_miss_nothing() {
    use orrery_core::analytics::query::{Query, Reads, totals};
    use orrery_core::analytics::{Dimension, Filter, HOUR_MS, Op};
    use orrery_core::event::MIN_TIMESTAMP_MS;
    for backend in backends("reads_jump_over_empty_stretches_and_miss_nothing") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let other = store.create_project("other").await.unwrap().id;
        let old = MIN_TIMESTAMP_MS + 5 * HOUR_MS + 1_800_000; // 2000-01-01T05:30Z
        let t = 1_795_430_000_000;
        let (w, _) = writer_with_sessions(&store, 2, 10_000, Duration::from_secs(3600));
        w.write(
            vec![
                session_event(project, "pageview", "s0", old, "/old"),
                session_event(project, "pageview", "s1", t, "/a"),
                session_event(project, "pageview", "s1", t + 60_000, "/c"),
                session_event(project, "pageview", "s2", t + 7 * HOUR_MS, "/b"),
                session_event(other, "pageview", "x", t - 400 * 24 * HOUR_MS, "/x"),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        w.close().await;

        let range = (MIN_TIMESTAMP_MS, t + 24 * HOUR_MS);
        let mut reads = Reads::new(project, range, 6 * HOUR_MS, true);
        let mut got = Vec::new();
        while let Some(r) = reads.next(&store).await.unwrap() {
            got.push(r);
        }
        let hour = |x: i64| x - x.rem_euclid(HOUR_MS);
        let at7 = hour(t + 7 * HOUR_MS);
        assert_eq!(
            got,
            vec![
                (hour(old), hour(old) + 6 * HOUR_MS),
                (hour(t), hour(t) + 6 * HOUR_MS),
                (at7, at7 + 6 * HOUR_MS),
            ],
            "{backend:?}"
        );

        // Filters on two dimensions are answered from raw events only: all
        // of them, over 26 years, in those three reads.
        let neq = |dimension: &str, value: &str| Filter {
            dimension: Dimension::parse(dimension).unwrap(),
            op: Op::Neq,
            values: vec![value.into()],
        };
        let q = Query {
            project,
            from: range.0,
            to: range.1,
            filters: vec![neq("page", "/nowhere"), neq("country", "XX")],
        };
        let m = totals(&store, &q, t + 24 * HOUR_MS).await.unwrap();
        assert_eq!(
            (m.events, m.pageviews, m.sessions, m.bounces),
            (4, 4, 3, 2),
            "{backend:?}: {m:?}"
        );
    }
}

/// What can no longer be used goes; what can stays.
#[tokio::test]
async fn expired_logins_tickets_and_failure_counts_are_purged() {
    for backend in backends("expired_logins_tickets_and_failure_counts_are_purged") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let account = store
            .create_account("a@x.io", "hash", false, false)
            .await
            .unwrap()
            .id;
        let now = now_ms();
        let live = store
            .create_auth_session(account, "live-token", now + 60_000)
            .await
            .unwrap();
        let ended = store
            .create_auth_session(account, "ended-token", now - 1)
            .await
            .unwrap();
        store
            .create_ws_ticket("old-ticket", account, project, now + 1)
            .await
            .unwrap();
        store
            .record_login_failure("ip:203.0.113.1", now - 20_000, 10_000, 5)
            .await
            .unwrap();
        store
            .record_login_failure("ip:203.0.113.2", now, 10_000, 5)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let purged = store.purge_auth(now_ms(), 10_000).await.unwrap();
        // The ended login and its token, the ticket, the old count.
        assert_eq!(purged, 4, "{backend:?}");
        assert!(store.auth_session(live).await.unwrap().is_some());
        assert!(store.auth_session(ended).await.unwrap().is_none());
        assert_eq!(store.take_ws_ticket("old-ticket").await.unwrap(), None);
        // The recent count still counts.
        let again = store
            .record_login_failure("ip:203.0.113.2", now_ms(), 10_000, 2)
            .await
            .unwrap();
        assert!(again.is_some(), "{backend:?}: the second failure locks");
    }
}

/// The person index: a rebuild numbers people once (a second rebuild and
/// two numberings at once give the same numbers), writes one row per hour
/// with events and one per day that is over, and deleting the project deletes its statistics with it.
#[tokio::test]
async fn people_are_numbered_once_and_go_with_their_project() {
    use orrery_core::analytics::{HOUR_MS, rollup};
    for backend in backends("people_are_numbered_once_and_go_with_their_project") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let other = store.create_project("other").await.unwrap().id;
        let t = 1_795_430_000_000 - 1_795_430_000_000 % HOUR_MS;
        let person = |p: Uuid, id: &str, at: i64| {
            EventBuilder::new("pageview")
                .project(p)
                .at(at)
                .field("distinct_id", id)
                .event()
        };
        let (w, _) = writer(&store, 2, 10_000);
        w.write(
            vec![
                person(project, "ann", t),
                person(project, "bob", t + 10),
                person(project, "ann", t + 2 * HOUR_MS),
                person(project, "cy", t + 2 * HOUR_MS + 5),
                person(other, "ann", t),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        w.close().await;
        let count = |table: &'static str, p: Uuid| {
            let store = store.clone();
            async move {
                let mark = if store.backend() == DatabaseBackend::Postgres {
                    "$1"
                } else {
                    "?"
                };
                let sql = format!("SELECT COUNT(*) FROM {table} WHERE project_id = {mark}");
                let row = store
                    .db()
                    .query_one(sea_orm::Statement::from_sql_and_values(
                        store.backend(),
                        sql,
                        [p.into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get_by_index::<i64>(0).unwrap()
            }
        };
        assert_eq!(
            rollup::rebuild(&store, None, 0, t + 3 * HOUR_MS)
                .await
                .unwrap(),
            3
        );
        let hashes: Vec<u64> = ["ann", "bob", "cy"]
            .iter()
            .map(|k| orrery_core::analytics::visitor_hash(k))
            .collect();
        let first = store.person_ids(project, &hashes, false).await.unwrap();
        let mut numbers: Vec<u32> = first.values().copied().collect();
        numbers.sort_unstable();
        assert_eq!(numbers, [1, 2, 3], "{backend:?}: dense, from 1");
        assert_eq!(count("person_hours", project).await, 2, "{backend:?}");
        // The day is over: its hours are merged into one row by day.
        assert_eq!(count("person_days", project).await, 1, "{backend:?}");
        // With their values: 12 dimensions for each of the 3 rows.
        assert_eq!(count("person_values", project).await, 36, "{backend:?}");
        assert_eq!(count("persons", other).await, 1, "{backend:?}");
        // The day is over: its daily rollup is made, its mark gone.
        assert!(count("rollup_days", project).await > 0, "{backend:?}");
        assert_eq!(count("rollup_days_due", project).await, 0, "{backend:?}");
        // Again, and two numberings of new people at once.
        rollup::rebuild(&store, Some(project), 0, t + 3 * HOUR_MS)
            .await
            .unwrap();
        assert_eq!(
            store.person_ids(project, &hashes, false).await.unwrap(),
            first
        );
        let new: Vec<u64> = (0..300)
            .map(|i| orrery_core::analytics::visitor_hash(&format!("n{i}")))
            .collect();
        // Looked up before they have numbers (the store keeps that they
        // have none, until numbers are given: below, all are found).
        let none = store.person_ids(project, &new[..50], false).await.unwrap();
        assert!(none.is_empty(), "{backend:?}");
        let again = store.person_ids(project, &hashes, false).await.unwrap();
        assert_eq!(again, first, "{backend:?}: found again");
        let (a, b) = tokio::join!(
            store.person_ids(project, &new, true),
            store.person_ids(project, &new[100..], true)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len(), 300, "{backend:?}");
        assert!(
            b.iter().all(|(h, n)| a[h] == *n),
            "{backend:?}: one number each"
        );
        let mut all: Vec<u32> = store
            .person_ids(project, &new, false)
            .await
            .unwrap()
            .into_values()
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 300, "{backend:?}: distinct numbers");
        assert!(all.iter().all(|n| *n > 3), "{backend:?}");

        store.delete_project(project).await.unwrap();
        for table in [
            "rollups",
            "rollup_hours",
            "rollup_dirty",
            "rollup_days",
            "rollup_day_sets",
            "rollup_days_due",
            "person_hours",
            "person_days",
            "person_values",
            "persons",
        ] {
            assert_eq!(count(table, project).await, 0, "{backend:?}: {table}");
        }
        assert_eq!(
            count("persons", other).await,
            1,
            "{backend:?}: the other project's stay"
        );
    }
}

/// A day's row of the person index is read only while it is up to date:
/// a late event's hour is read raw while it is marked, then from its new
/// row once redone (while the day waits to be made again), then from the
/// day made again; the funnel counts the late event each time.
#[tokio::test]
async fn a_funnel_reads_a_day_row_only_while_it_is_up_to_date() {
    use orrery_core::analytics::funnel::{self, Funnel, Step};
    use orrery_core::analytics::query::Query;
    use orrery_core::analytics::{HOUR_MS, rollup};
    for backend in backends("a_funnel_reads_a_day_row_only_while_it_is_up_to_date") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        const DAY: i64 = 24 * HOUR_MS;
        let day = (now_ms() / DAY - 3) * DAY;
        let at = |id: &str, name: &str, t: i64| {
            EventBuilder::new(name)
                .project(project)
                .at(day + t)
                .field("distinct_id", id)
                .event()
        };
        let write = |events: Vec<Event>| {
            let store = store.clone();
            async move {
                let (w, _) = writer(&store, 2, 10_000);
                w.write(events, Vec::new()).await.unwrap();
                w.close().await;
            }
        };
        // carl the day before (so the day lies wholly in the range), ann
        // and bob in the day, bob again the day after.
        write(vec![
            at("carl", "view", -20 * HOUR_MS),
            at("ann", "view", HOUR_MS),
            at("ann", "signup", 2 * HOUR_MS),
            at("bob", "view", 3 * HOUR_MS),
            at("bob", "view", 30 * HOUR_MS),
        ])
        .await;
        rollup::rebuild(&store, None, 0, now_ms()).await.unwrap();
        let f = Funnel {
            query: Query {
                project,
                from: day - DAY,
                to: now_ms(),
                filters: Vec::new(),
            },
            steps: ["view", "signup"]
                .map(|e| Step {
                    event: e.into(),
                    filters: Vec::new(),
                })
                .to_vec(),
            window_ms: DAY,
            breakdown: None,
        };
        let reached = || {
            let (store, f) = (store.clone(), f.clone());
            async move {
                let answer = funnel::run(&store, &f, now_ms()).await;
                answer.map(|a| a.steps.iter().map(|s| s.people).collect::<Vec<u64>>())
            }
        };
        assert_eq!(reached().await.unwrap(), [3, 1], "{backend:?}");
        let days_due = || async {
            store
                .days_due(project, day / DAY, day / DAY + 1)
                .await
                .unwrap()
                .len()
        };
        assert_eq!(days_due().await, 0, "{backend:?}: the day is made");

        // bob signs up in the day's hour 4, late: the hour is marked.
        let hour = day / HOUR_MS + 4;
        write(vec![at("bob", "signup", 4 * HOUR_MS + 5)]).await;
        let dirty = store.dirty_hours(project, hour, hour + 1).await.unwrap();
        assert_eq!(dirty.len(), 1, "{backend:?}");
        assert_eq!(reached().await.unwrap(), [3, 2], "{backend:?}: marked");
        // Redone: the day waits to be made again, its row is old.
        rollup::redo_hour(&store, project, hour, None)
            .await
            .unwrap();
        assert_eq!(days_due().await, 1, "{backend:?}");
        assert_eq!(reached().await.unwrap(), [3, 2], "{backend:?}: redone");
        // Made again.
        rollup::make_due_days(&store, now_ms(), 100).await.unwrap();
        assert_eq!(days_due().await, 0, "{backend:?}");
        assert_eq!(reached().await.unwrap(), [3, 2], "{backend:?}: made");

        // Hours at the range's edges are cut from their rows: ann's view
        // at 1:00 is in from 1:00, not from 1:00 and 1 ms; bob's signup at
        // 4:00 and 5 ms is in up to 4:00 and 6 ms, not up to 4:00 and 5.
        for (from, to, want) in [
            (HOUR_MS, 4 * HOUR_MS + 6, [2, 2]),
            (HOUR_MS + 1, 4 * HOUR_MS + 6, [1, 1]),
            (HOUR_MS + 1, 4 * HOUR_MS + 5, [1, 0]),
        ] {
            let mut f = f.clone();
            (f.query.from, f.query.to) = (day + from, day + to);
            let answer = funnel::run(&store, &f, now_ms()).await.unwrap();
            let got: Vec<u64> = answer.steps.iter().map(|s| s.people).collect();
            assert_eq!(got, want, "{backend:?}: {from} to {to}");
        }

        // The day's row is what is read: a cut one is an error.
        store
            .db()
            .execute_unprepared(
                "UPDATE person_days SET events = substr(events, 1, length(events) - 1)",
            )
            .await
            .unwrap();
        let err = reached().await.unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{backend:?}: {err}");
    }
}

/// A funnel with filters or a breakdown on an indexed dimension reads the
/// index's values: the answers are right, a damaged values row is an
/// error (while funnels without such filters still read the rest), and
/// rows without values are read from raw events.
#[tokio::test]
async fn a_filtered_funnel_reads_the_values_of_the_index() {
    use orrery_core::analytics::aggregate::{Filter, Op};
    use orrery_core::analytics::funnel::{self, Funnel, Step};
    use orrery_core::analytics::query::{Interval, Query};
    use orrery_core::analytics::retention::{self, Retention};
    use orrery_core::analytics::{Dimension, HOUR_MS, rollup};
    for backend in backends("a_filtered_funnel_reads_the_values_of_the_index") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        const DAY: i64 = 24 * HOUR_MS;
        let day = (now_ms() / DAY - 3) * DAY;
        let at = |id: &str, name: &str, page: &str, t: i64| {
            EventBuilder::new(name)
                .project(project)
                .at(day + t)
                .field("distinct_id", id)
                .field("url", page)
                .event()
        };
        // ann views /a then signs up; bob views /b then signs up; carl
        // views /a only. All in one day, read from its row by day.
        let (w, _) = writer(&store, 2, 10_000);
        w.write(
            vec![
                at("ann", "view", "/a", HOUR_MS),
                at("ann", "signup", "/b", 2 * HOUR_MS),
                at("bob", "view", "/b", 3 * HOUR_MS),
                at("bob", "signup", "/b", 3 * HOUR_MS + 10),
                at("carl", "view", "/a", 5 * HOUR_MS),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        w.close().await;
        rollup::rebuild(&store, None, 0, now_ms()).await.unwrap();
        let page = Dimension::parse("page").unwrap();
        let filter = |op: Op, value: &str| Filter {
            dimension: page.clone(),
            op,
            values: vec![value.into()],
        };
        let step = |e: &str, filters: Vec<Filter>| Step {
            event: e.into(),
            filters,
        };
        let base = Funnel {
            query: Query {
                project,
                from: day - DAY,
                to: now_ms(),
                filters: Vec::new(),
            },
            steps: vec![step("view", vec![]), step("signup", vec![])],
            window_ms: DAY,
            breakdown: None,
        };
        let on_a = Funnel {
            steps: vec![
                step("view", vec![filter(Op::Eq, "/a")]),
                step("signup", vec![]),
            ],
            ..base.clone()
        };
        let mut not_a = base.clone();
        not_a.query.filters = vec![filter(Op::Neq, "/a")];
        let by_page = Funnel {
            breakdown: Some(page.clone()),
            ..base.clone()
        };
        let run = |f: &Funnel| {
            let (store, f) = (store.clone(), f.clone());
            async move {
                funnel::run(&store, &f, now_ms()).await.map(|a| {
                    let people =
                        |s: &[funnel::StepCount]| s.iter().map(|s| s.people).collect::<Vec<u64>>();
                    let groups: Vec<(Option<String>, Vec<u64>)> = a
                        .groups
                        .iter()
                        .map(|(v, s)| (v.clone(), people(s)))
                        .collect();
                    (people(&a.steps), groups)
                })
            }
        };
        // Daily retention, filtered as `not_a`: the people first seen on
        // an event off /a (ann on her signup, bob), active that day.
        let not_a_retention = Retention {
            query: not_a.query.clone(),
            period: Interval::Day,
            tz: chrono_tz::UTC,
            cohort_event: None,
            return_event: None,
            periods: 2,
        };
        let starts = Interval::Day
            .buckets(chrono_tz::UTC, base.query.from, base.query.to)
            .unwrap();
        let cohorts = |r: &Retention| {
            let (store, r, starts) = (store.clone(), r.clone(), starts.clone());
            async move {
                retention::run(&store, &r, &starts, now_ms())
                    .await
                    .map(|c| {
                        c.into_iter()
                            .filter(|c| c.people > 0)
                            .map(|c| (c.start, c.people, c.active))
                            .collect::<Vec<_>>()
                    })
            }
        };
        let unfiltered = Retention {
            query: base.query.clone(),
            ..not_a_retention.clone()
        };
        // Filtered on the event name alone: no values needed.
        let mut signups = unfiltered.clone();
        signups.query.filters = vec![Filter {
            dimension: Dimension::parse("event").unwrap(),
            op: Op::Eq,
            values: vec!["signup".into()],
        }];
        assert_eq!(
            cohorts(&unfiltered).await.unwrap(),
            [(day, 3, vec![3, 0])],
            "{backend:?}"
        );
        let answers = || async {
            (
                run(&on_a).await.unwrap(),
                run(&not_a).await.unwrap(),
                run(&by_page).await.unwrap(),
                cohorts(&not_a_retention).await.unwrap(),
            )
        };
        let want = (
            (vec![2, 1], vec![]),
            // ann's signup on /b is after a view on /a, left out.
            (vec![1, 1], vec![]),
            (
                vec![3, 2],
                vec![
                    (Some("/a".to_owned()), vec![2, 1]),
                    (Some("/b".to_owned()), vec![1, 1]),
                ],
            ),
            vec![(day, 2, vec![2, 0])],
        );
        assert_eq!(answers().await, want, "{backend:?}: from the index");
        assert!(store.hours_without_values(10).await.unwrap().is_empty());

        // A damaged values row is what is read: an error; the funnel
        // without filters does not read values.
        let damage = "UPDATE person_values SET vals = substr(vals, 1, length(vals) - 1)";
        store.db().execute_unprepared(damage).await.unwrap();
        for f in [&on_a, &not_a, &by_page] {
            let err = run(f).await.unwrap_err().to_string();
            assert!(err.contains("cannot be read"), "{backend:?}: {err}");
        }
        let err = cohorts(&not_a_retention).await.unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{backend:?}: {err}");
        assert_eq!(
            cohorts(&signups).await.unwrap(),
            [(day, 2, vec![2, 0])],
            "{backend:?}"
        );
        assert_eq!(run(&base).await.unwrap().0, [3, 2], "{backend:?}");
        assert_eq!(cohorts(&unfiltered).await.unwrap().len(), 1, "{backend:?}");

        // Rows without values are read raw, with the same answers.
        store
            .db()
            .execute_unprepared("DELETE FROM person_values")
            .await
            .unwrap();
        assert_eq!(answers().await, want, "{backend:?}: from raw events");
        assert_eq!(
            store.hours_without_values(10).await.unwrap().len(),
            4,
            "{backend:?}"
        );
    }
}

/// Writes `n` page views of `people` people to `project`, a second apart
/// from the start of an hour, which it returns (ms).
async fn pageviews_in_an_hour(store: &Store, project: Uuid, n: i64, people: i64) -> i64 {
    let t = 1_795_430_000_000 - 1_795_430_000_000 % orrery_core::analytics::HOUR_MS;
    let (w, _) = writer(store, 2, 10_000);
    let events = (0..n)
        .map(|i| {
            EventBuilder::new("pageview")
                .project(project)
                .at(t + i * 1000)
                .field("distinct_id", format!("v{}", i % people))
                .event()
        })
        .collect();
    w.write(events, Vec::new()).await.unwrap();
    w.close().await;
    t
}

/// The rollup job and `orrery rollups rebuild` may redo the same hour and
/// make the same day at once: they take turns, both succeed, and the
/// rollup is the one of the events.
#[tokio::test]
async fn the_same_hour_redone_twice_at_once_succeeds_both_times() {
    use orrery_core::analytics::{HOUR_MS, rollup};
    for backend in backends("the_same_hour_redone_twice_at_once_succeeds_both_times") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let t = pageviews_in_an_hour(&store, project, 200, 50).await;
        let hour = t / HOUR_MS;
        for _ in 0..5 {
            let (a, b) = tokio::join!(
                rollup::redo_hour(&store, project, hour, None),
                rollup::redo_hour(&store, project, hour, None)
            );
            assert!(a.is_ok() && b.is_ok(), "{backend:?}: {a:?} {b:?}");
            let (a, b) = tokio::join!(
                rollup::make_day(&store, project, hour / 24, 1),
                rollup::make_day(&store, project, hour / 24, 1)
            );
            assert!(a.is_ok() && b.is_ok(), "{backend:?}: {a:?} {b:?}");
        }
        // The mark of the last redo is still there: the day is made once
        // more, then read from its daily rollup.
        let now = t + 30 * 24 * HOUR_MS;
        assert_eq!(
            rollup::make_due_days(&store, now, 100).await.unwrap(),
            1,
            "{backend:?}"
        );
        let totals = orrery_core::analytics::query::totals(
            &store,
            &orrery_core::analytics::query::Query {
                project,
                from: (hour / 24) * 24 * HOUR_MS,
                to: (hour / 24 + 1) * 24 * HOUR_MS,
                filters: Vec::new(),
            },
            now,
        )
        .await
        .unwrap();
        assert_eq!(
            (totals.events, totals.visitors.count()),
            (200, 50),
            "{backend:?}"
        );
    }
}

/// Daily rollups keep large exact visitor sets apart. Merging cells over
/// days gives what merging every set in memory gives, whichever way the
/// merger takes: a union surely beyond the exact limit from the sketches
/// alone (it still answers with the hashes gone), a smaller one from the
/// hashes, exactly.
#[tokio::test]
async fn split_daily_sets_merge_as_the_sets_do() {
    use std::collections::HashMap;

    use orrery_core::analytics::rollup::DAY_EXACT_LIMIT;
    use orrery_core::analytics::sketch::MERGE_EXACT_LIMIT;
    use orrery_core::analytics::{Dim, Metrics, visitor_hash};
    use orrery_core::store::rollups::{CellMerger, Span};

    let page = Dim::Page.code();
    let day0 = 20_400;
    // Per value, the visitors of day d: returning ones (30,000 of the
    // same 35,000 each day: 35,000 in all, exact), new ones (25,000 a
    // day, 150,000 over 6 days: surely beyond 100,000), new ones near
    // the limit (28,000 a day, 112,000 over 4 days: read exactly, then a
    // sketch), and a few (never split).
    let visitors = |value: &str, d: u64| -> std::ops::Range<u64> {
        match value {
            "/returning" => d * 1000..d * 1000 + 30_000,
            "/new" => 1_000_000 + d * 25_000..1_000_000 + (d + 1) * 25_000,
            "/border" if d < 4 => 2_000_000 + d * 28_000..2_000_000 + (d + 1) * 28_000,
            "/border" => 0..0,
            _ => 3_000_000 + d * 50..3_000_000 + d * 50 + 120,
        }
    };
    let values = ["/returning", "/new", "/border", "/small"];
    let cell = |value: &str, d: u64| {
        let mut m = Metrics {
            events: 2 * d as i64 + 1,
            ..Metrics::default()
        };
        for v in visitors(value, d) {
            m.visitors
                .insert(visitor_hash(&format!("v{v}")), DAY_EXACT_LIMIT);
        }
        m
    };
    for backend in backends("split_daily_sets_merge_as_the_sets_do") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let mut expected: HashMap<Option<String>, Metrics> = HashMap::new();
        for d in 0..6 {
            let cells: Vec<(i16, Option<String>, Metrics)> = values
                .iter()
                .map(|v| (page, Some((*v).to_owned()), cell(v, d)))
                .collect();
            for (_, v, m) in &cells {
                expected
                    .entry(v.clone())
                    .or_default()
                    .merge(m, MERGE_EXACT_LIMIT);
            }
            store
                .write_day(project, day0 + d as i64, 1, &cells, None)
                .await
                .unwrap();
        }
        // The six days merged (only `only`'s cells, when given).
        let merged = |interleaved: bool, only: Option<&'static str>| {
            let store = store.clone();
            async move {
                let mut merger = CellMerger::new(MERGE_EXACT_LIMIT, interleaved);
                let mut got: HashMap<Option<String>, Metrics> = HashMap::new();
                store
                    .rollup_cells(Span::Day, project, (page, day0, day0 + 6), |mut c| {
                        let key = c.value.take();
                        if only.is_some_and(|o| key.as_deref() != Some(o)) {
                            return Ok(());
                        }
                        merger.add(&mut got, key, c)
                    })
                    .await?;
                merger.finish(&store, project, &mut got).await?;
                Ok::<_, orrery_core::store::StoreError>(got)
            }
        };
        for interleaved in [true, false] {
            let got = merged(interleaved, None).await.unwrap();
            assert_eq!(got, expected, "{backend:?}, interleaved: {interleaved}");
        }
        let count = |v: &str| expected[&Some(v.to_owned())].visitors.count();
        assert_eq!(count("/returning"), 35_000);
        assert!(expected[&Some("/returning".to_owned())].visitors.is_exact());
        assert_eq!(count("/small"), 370);
        for (v, n) in [("/new", 150_000.0), ("/border", 112_000.0)] {
            assert!(!expected[&Some(v.to_owned())].visitors.is_exact(), "{v}");
            let err = (count(v) as f64 - n).abs() / n;
            assert!(err < 0.02, "{v}: {} for {n}", count(v));
        }
        // The hashes gone: the union beyond the limit still comes from the
        // sketches; the others cannot be answered, and say so.
        store
            .db()
            .execute_unprepared("DELETE FROM rollup_day_sets")
            .await
            .unwrap();
        let err = merged(true, None).await.unwrap_err().to_string();
        assert!(err.contains("changed while it was read"), "{err}");
        let got = merged(true, Some("/new")).await.unwrap();
        let new = Some("/new".to_owned());
        assert_eq!(got[&new], expected[&new], "{backend:?}");
    }
}

/// Migrations 17 (split daily sets) and 18 (person index columns
/// reordered) go down and up again: the person index rows stay, and the
/// daily rollups the older code cannot read are dropped and their days
/// marked, to be made again.
#[tokio::test]
async fn the_last_migrations_go_down_and_up_keeping_the_index() {
    use orrery_core::analytics::rollup::DAY_EXACT_LIMIT;
    use orrery_core::analytics::{HOUR_MS, Metrics, rollup, visitor_hash};
    use orrery_core::store::migrations::Migrator;
    use sea_orm_migration::MigratorTrait;

    for backend in backends("the_last_migrations_go_down_and_up_keeping_the_index") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let t = pageviews_in_an_hour(&store, project, 50, 20).await;
        rollup::redo_hour(&store, project, t / HOUR_MS, None)
            .await
            .unwrap();
        // A day with a large set (split) and one without.
        let mut big = Metrics::default();
        for v in 0..5000 {
            big.visitors
                .insert(visitor_hash(&format!("v{v}")), DAY_EXACT_LIMIT);
        }
        let small = Metrics::default();
        store
            .write_day(project, 100, 1, &[(0, None, big)], None)
            .await
            .unwrap();
        store
            .write_day(project, 101, 1, &[(0, None, small)], None)
            .await
            .unwrap();
        let scalar = |sql: &str| {
            let (store, sql) = (store.clone(), sql.to_owned());
            async move {
                store
                    .db()
                    .query_one(sea_orm::Statement::from_string(store.backend(), sql))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index::<i64>(0)
                    .unwrap()
            }
        };
        let index =
            "SELECT COUNT(*) FROM person_hours WHERE length(people) > 0 AND length(events) > 0";
        let index = if backend == Backend::Postgres {
            "SELECT COUNT(*) FROM person_hours WHERE octet_length(people) > 0 \
             AND octet_length(events) > 0"
        } else {
            index
        };
        assert_eq!(scalar(index).await, 1, "{backend:?}");
        assert_eq!(
            scalar("SELECT COUNT(*) FROM person_values WHERE span = 1").await,
            12,
            "{backend:?}: the hour's values, one row per indexed dimension"
        );
        // Down past the index's values (20), the index by day (19), the
        // index's column order (18) and the split daily sets (17).
        Migrator::down(store.db(), Some(4)).await.unwrap();
        assert_eq!(scalar(index).await, 1, "{backend:?}: the index stays");
        assert_eq!(
            scalar("SELECT COUNT(*) FROM rollup_days").await,
            1,
            "{backend:?}: the split day is dropped"
        );
        assert_eq!(
            scalar("SELECT COUNT(*) FROM rollup_days_due WHERE day = 100").await,
            1,
            "{backend:?}: and marked"
        );
        store.migrate().await.unwrap();
        assert_eq!(scalar(index).await, 1, "{backend:?}");
        assert_eq!(
            scalar("SELECT COUNT(*) FROM rollup_days_due WHERE day = 101").await,
            1,
            "{backend:?}: every day is made again after the upgrade"
        );
        // And every day with indexed hours, for its row by day.
        let day = t / HOUR_MS / 24;
        assert_eq!(
            scalar(&format!(
                "SELECT COUNT(*) FROM rollup_days_due WHERE day = {day}"
            ))
            .await,
            1,
            "{backend:?}"
        );
        // The hour indexed before values were kept is redone by the job
        // to get them (its day is made again after it), once.
        assert_eq!(
            store.hours_without_values(10).await.unwrap(),
            vec![(project, t / HOUR_MS)],
            "{backend:?}"
        );
        let mut recent = rollup::RecentRedos::new(0);
        let done = rollup::redo_due(&store, i64::MAX / 2, 100, &mut recent)
            .await
            .unwrap();
        assert_eq!((done.0, done.1), (1, 0), "{backend:?}");
        assert!(store.hours_without_values(10).await.unwrap().is_empty());
        assert_eq!(
            rollup::redo_due(&store, i64::MAX / 2, 100, &mut recent)
                .await
                .unwrap()
                .0,
            0,
            "{backend:?}"
        );
        assert_eq!(
            scalar("SELECT COUNT(*) FROM person_days").await,
            1,
            "{backend:?}: the day of the indexed hour has its row"
        );
        assert_eq!(
            scalar("SELECT COUNT(*) FROM person_values WHERE span = 24").await,
            12,
            "{backend:?}: with its values"
        );
    }
}

/// Raw event reads (SQLite reads them in pages of a few thousand, one
/// row per page): every event of the range and project exactly once,
/// across pages that cut through runs of equal times, with its fields
/// as written, names filtered, the range's ends respected.
#[tokio::test]
async fn raw_event_reads_return_every_event_once_with_its_fields() {
    use orrery_core::store::people::EventColumns;
    for backend in backends("raw_event_reads_return_every_event_once_with_its_fields") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let other = store.create_project("q").await.unwrap().id;
        let t = 1_795_430_000_000;
        let (w, _) = writer(&store, 2, 20_000);
        let events: Vec<Event> = (0..10_000i64)
            .map(|i| {
                // Runs of 7 events at the same ms.
                let name = if i % 2 == 0 { "pageview" } else { "signup" };
                let mut e = EventBuilder::new(name)
                    .project(project)
                    .at(t + i / 7 * 1000)
                    .field("distinct_id", format!("v{}", i % 300))
                    .field(
                        "properties",
                        serde_json::json!({"i": i, "note": "a \"quoted\" ü\n"}),
                    )
                    .event();
                e.enrichment.insert("country".into(), "DE".into());
                e
            })
            .chain((0..100).map(|i| {
                EventBuilder::new("pageview")
                    .project(other)
                    .at(t + i * 1000)
                    .event()
            }))
            .collect();
        w.write(events, Vec::new()).await.unwrap();
        w.close().await;
        let all = EventColumns {
            names: None,
            enrichment: true,
            properties: true,
            filters: &[],
        };
        let read = store
            .event_facts(project, t, t + 10_000_000, &all)
            .await
            .unwrap();
        assert_eq!(read.len(), 10_000, "{backend:?}");
        let mut seqs: Vec<i64> = read.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 10_000, "{backend:?}: an event read twice");
        for e in &read {
            let i = e.properties.as_ref().unwrap()["i"].as_i64().unwrap();
            assert_eq!(e.timestamp, t + i / 7 * 1000, "{backend:?}");
            assert_eq!(e.name, if i % 2 == 0 { "pageview" } else { "signup" });
            assert_eq!(
                e.properties.as_ref().unwrap()["note"],
                "a \"quoted\" ü\n",
                "{backend:?}"
            );
            assert_eq!(
                e.enrichment.get("country"),
                Some(&"DE".into()),
                "{backend:?} {e:?}"
            );
            assert_eq!(
                e.visitor,
                Some(orrery_core::analytics::visitor_hash(&format!(
                    "v{}",
                    i % 300
                )))
            );
        }
        let signups = ["signup".to_owned()];
        let named = EventColumns {
            names: Some(&signups),
            enrichment: false,
            properties: false,
            filters: &[],
        };
        let read = store
            .event_facts(project, t, t + 10_000_000, &named)
            .await
            .unwrap();
        assert_eq!(read.len(), 5_000, "{backend:?}");
        assert!(
            read.iter()
                .all(|e| e.name == "signup" && e.properties.is_none())
        );
        assert!(read.iter().all(|e| e.enrichment.is_empty()));
        // [t + 1 s, t + 2 s): the second run of 7.
        let read = store
            .event_facts(project, t + 1000, t + 2000, &all)
            .await
            .unwrap();
        assert_eq!(read.len(), 7, "{backend:?}");
    }
}

/// Raw reads given filters may leave out events that surely fail them
/// (SQLite does, for `eq`/`in` on the name or an enrichment field), and
/// never one that passes, or whose field is not text (the caller compares
/// its JSON text), or whose enrichment is not valid JSON.
#[tokio::test]
async fn raw_reads_leave_out_only_events_that_surely_fail_a_filter() {
    use orrery_core::analytics::{Dimension, Filter, Op};
    use orrery_core::store::people::EventColumns;
    for backend in backends("raw_reads_leave_out_only_events_that_surely_fail_a_filter") {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap().id;
        let t = 1_795_430_000_000;
        let (w, _) = writer(&store, 2, 1_000);
        // Country by i % 4: "DE", "FR", the number 5, none.
        let events: Vec<Event> = (0..400i64)
            .map(|i| {
                let name = if i % 2 == 0 { "pageview" } else { "signup" };
                let mut e = EventBuilder::new(name)
                    .project(project)
                    .at(t + i * 1000)
                    .field("properties", serde_json::json!({"i": i}))
                    .event();
                match i % 4 {
                    0 => e.enrichment.insert("country".into(), "DE".into()),
                    1 => e.enrichment.insert("country".into(), "FR".into()),
                    2 => e.enrichment.insert("country".into(), 5.into()),
                    _ => None,
                };
                e
            })
            .collect();
        w.write(events, Vec::new()).await.unwrap();
        w.close().await;
        let sqlite = backend == Backend::Sqlite;
        if sqlite {
            // Event 4 (a "DE" one) gets enrichment that is not JSON.
            store
                .db()
                .execute_unprepared(
                    "UPDATE events SET enrichment = '{bad' WHERE json_extract(properties, '$.i') = 4",
                )
                .await
                .unwrap();
        }
        let filter = |dim: &str, op: Op, values: &[&str]| Filter {
            dimension: Dimension::parse(dim).unwrap(),
            op,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        let read = |filters: Vec<Filter>| {
            let store = store.clone();
            async move {
                let cols = EventColumns {
                    properties: true,
                    ..EventColumns::reading(None, filters.iter().map(|f| &f.dimension))
                        .keeping(&filters)
                };
                let mut is: Vec<i64> = store
                    .event_facts(project, t, t + 400_000, &cols)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| e.properties.as_ref().unwrap()["i"].as_i64().unwrap())
                    .collect();
                is.sort_unstable();
                is
            }
        };
        let all: Vec<i64> = (0..400).collect();
        let de = read(vec![filter("country", Op::Eq, &["DE"])]).await;
        // "DE" and the number (and, on SQLite, the event whose enrichment
        // is not JSON, a "DE" one).
        let kept: Vec<i64> = all
            .iter()
            .copied()
            .filter(|i| i % 4 == 0 || i % 4 == 2)
            .collect();
        assert_eq!(de, kept, "{backend:?}");
        let both = read(vec![filter("country", Op::In, &["DE", "FR"])]).await;
        assert_eq!(both.len(), 300, "{backend:?}");
        let signups = read(vec![filter("event", Op::Eq, &["signup"])]).await;
        let odd: Vec<i64> = all.iter().copied().filter(|i| i % 2 == 1).collect();
        assert_eq!(signups, odd, "{backend:?}");
        // Not left out: `neq`, `contains` and property filters.
        for f in [
            filter("country", Op::Neq, &["DE"]),
            filter("country", Op::Contains, &["D"]),
            filter("properties.i", Op::Eq, &["3"]),
        ] {
            assert_eq!(read(vec![f]).await, all, "{backend:?}");
        }
    }
}
