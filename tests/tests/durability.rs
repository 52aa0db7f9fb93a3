//! Promise 1: an acknowledged event is never lost. Back-pressure with 503,
//! graceful shutdown, and `kill -9` while clients are sending.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orrery_tests::{Api, Server, backends, client};
use serde_json::{Value, json};
use tokio::sync::Mutex;

fn batch(n: usize, ids: &mut Vec<String>) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            let session = format!("s-{}", ids.len() % 10);
            ids.push(id.clone());
            json!({"id": id, "event": "load", "session_id": session, "properties": {"k": "v"}})
        })
        .collect();
    json!({ "batch": events })
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    let server = Server::sqlite(&[
        ("ORRERY_INGEST__QUEUE_CAPACITY", "100"),
        ("ORRERY_INGEST__FLUSH_EVENTS", "100000"),
        ("ORRERY_INGEST__FLUSH_INTERVAL_MS", "4000"),
        ("ORRERY_INGEST__RETRY_AFTER_SECS", "2"),
    ])
    .await;
    let url = server.url("/api/v1/events");
    let key = server.keys.public_key.clone();
    let mut ids = Vec::new();
    // Two requests of 40 events wait in the writer's gathering window...
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let body = batch(40, &mut ids);
        let (url, key) = (url.clone(), key.clone());
        waiting.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    // Both are in once the queue holds their 80 events (not after a set
    // time: a busy machine may take longer to send them).
    let mut depth = String::new();
    for _ in 0..200 {
        depth = server.metrics_text().await;
        if depth.contains("orrery_writer_queue_depth 80\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        depth.contains("orrery_writer_queue_depth 80\n"),
        "the two requests never waited together: {depth}"
    );
    // ...so a third of 40 does not fit in the 100-event queue.
    let mut rejected_ids = Vec::new();
    let resp = client()
        .post(&url)
        .header("X-API-Key", &key)
        .json(&batch(40, &mut rejected_ids))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "queue_full");
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    // Room again once the writer committed.
    let resp = client()
        .post(&url)
        .header("X-API-Key", &key)
        .json(&batch(40, &mut ids))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stored: HashSet<String> = server
        .all_events("", 1000)
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ids.into_iter().collect::<HashSet<_>>());
    assert!(rejected_ids.iter().all(|id| !stored.contains(id)));
}

/// Clients sending batches until told to stop or the server goes away;
/// returns (acknowledged ids, all sent ids).
async fn run_clients(server: &Server, stop: Arc<AtomicBool>) -> (Vec<String>, Vec<String>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, key) = (server.url("/api/v1/events"), server.keys.public_key.clone());
        let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) && failures < 20 {
                let mut ids = Vec::new();
                let body = batch(10, &mut ids);
                sent.lock().await.extend(ids.iter().cloned());
                match http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => {
                        let v: Value = resp.json().await.unwrap_or(Value::Null);
                        if v["accepted"] == 10 {
                            acked.lock().await.extend(ids);
                        }
                    }
                    _ => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let sent = sent.lock().await.clone();
    (acked, sent)
}

async fn check_stored(server: &Server, acked: &[String], sent: &[String], what: &str) {
    let stored: HashSet<String> = server
        .all_events("", 1000)
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let sent: HashSet<&String> = sent.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged events lost",
        lost.len(),
        acked.len()
    );
    assert!(
        stored.iter().all(|id| sent.contains(id)),
        "{what}: unknown events stored"
    );
    assert!(
        acked.len() >= 100,
        "{what}: too few events acknowledged ({}) to mean anything",
        acked.len()
    );
}

/// Events per session, as stored and as the `sessions` table says.
async fn session_counts(server: &Server) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let mut stored = HashMap::new();
    for e in server.all_events("", 1000).await {
        *stored
            .entry(e["session_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    let page: Value = client()
        .get(server.url(&format!(
            "/api/v1/projects/{}/sessions?limit=100",
            server.keys.project_id
        )))
        .header("X-API-Key", &server.keys.secret_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let table = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                s["events"].as_i64().unwrap(),
            )
        })
        .collect();
    (stored, table)
}

/// The `sessions` table agrees with the stored events, at once or (with
/// `wait`) within 20 s.
async fn check_sessions(server: &Server, wait: bool, what: &str) {
    let mut tries = if wait { 200 } else { 1 };
    loop {
        let (stored, table) = session_counts(server).await;
        if stored == table {
            assert_eq!(stored.len(), 10, "{what}: {stored:?}");
            return;
        }
        tries -= 1;
        assert!(
            tries > 0,
            "{what}: sessions disagree with the stored events:\nstored {stored:?}\ntable  {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_loses_no_acknowledged_event() {
    for backend in backends("graceful_shutdown_loses_no_acknowledged_event") {
        let mut server = Server::on(backend, &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let pid = server.pid().unwrap();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            orrery_tests::send_sigterm(pid);
        });
        let (acked, sent) = run_clients(&server, stop.clone()).await;
        stopper.await.unwrap();
        assert!(
            server.terminate(),
            "{backend:?}: orrery exited non-zero after SIGTERM"
        );
        server.spawn();
        check_stored(&server, &acked, &sent, &format!("{backend:?} SIGTERM")).await;
        // The writer wrote its sessions before it exited.
        check_sessions(&server, false, &format!("{backend:?} SIGTERM")).await;
        drop(server);
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_event() {
    for backend in backends("kill_9_loses_no_acknowledged_event") {
        // Sessions written every 100 ms: a mark goes stale after 3 s.
        let mut server = Server::on(backend, &[("ORRERY_INGEST__SESSIONS_FLUSH_MS", "100")]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let pid = server.pid().unwrap();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        });
        let (acked, sent) = run_clients(&server, stop.clone()).await;
        killer.await.unwrap();
        server.kill9();
        server.spawn();
        check_stored(&server, &acked, &sent, &format!("{backend:?} kill -9")).await;
        // The killed writer's last sessions are recomputed from the events
        // once its mark goes stale.
        check_sessions(&server, true, &format!("{backend:?} kill -9")).await;
        drop(server);
    }
}
