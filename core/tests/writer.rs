//! The store and the group-commit writer on real SQLite files and the
//! local PostgreSQL (when `ORRERY_TEST_DATABASE_URL` is set).

use std::sync::Arc;
use std::time::Duration;

use orrery_core::config::Config;
use orrery_core::event::{Event, EventLimits, now_ms, parse_event};
use orrery_core::metrics::CoreMetrics;
use orrery_core::store::{EventFilter, KeyKind, Store};
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
    parse_event(
        &serde_json::json!({"event": name, "properties": {"k": 1}}),
        project,
        now_ms(),
        EventLimits {
            max_event_bytes: 10_000,
        },
    )
    .unwrap()
}

fn writer(store: &Store, interval_ms: u64, capacity: usize) -> (Writer, CoreMetrics) {
    let metrics = CoreMetrics::default();
    let w = Writer::start(
        store.clone(),
        WriterConfig {
            flush_events: 10_000,
            flush_interval: Duration::from_millis(interval_ms),
            queue_capacity: capacity,
        },
        metrics.clone(),
    );
    (w, metrics)
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_all_land() {
    for backend in backends("concurrent_writes_share_commits_and_all_land") {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = open(backend, &dir).await;
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
        db.drop_db().await;
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
        let (store, db) = open(backend, &dir).await;
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
        db.drop_db().await;
    }
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(Backend::Sqlite, &dir).await;
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
    db.drop_db().await;
}

#[tokio::test]
async fn projects_and_keys_round_trip() {
    for backend in backends("projects_and_keys_round_trip") {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = open(backend, &dir).await;
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
        db.drop_db().await;
    }
}

#[tokio::test]
async fn a_job_lease_has_one_holder_until_it_expires() {
    for backend in backends("a_job_lease_has_one_holder_until_it_expires") {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = open(backend, &dir).await;
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
        db.drop_db().await;
    }
}

#[tokio::test]
async fn stored_pipelines_round_trip_and_reset() {
    use orrery_core::pipeline::StageSpec;
    for backend in backends("stored_pipelines_round_trip_and_reset") {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = open(backend, &dir).await;
        let project = store.create_project("p").await.unwrap();
        assert_eq!(store.get_pipeline(project.id).await.unwrap(), None);
        let stages: Vec<StageSpec> = serde_json::from_value(serde_json::json!([
            {"plugin": "ip_hash"},
            {"plugin": "session", "config": {"inactivity_minutes": 5}, "on_error": "dead_letter", "timeout_ms": 20}
        ]))
        .unwrap();
        store.put_pipeline(project.id, &stages).await.unwrap();
        store.put_pipeline(project.id, &stages[..1]).await.unwrap();
        store.put_pipeline(project.id, &stages).await.unwrap();
        let got = store.get_pipeline(project.id).await.unwrap().unwrap();
        assert_eq!(got.stages, stages);
        store.delete_pipeline(project.id).await.unwrap();
        assert_eq!(store.get_pipeline(project.id).await.unwrap(), None);
        store.close().await;
        db.drop_db().await;
    }
}
