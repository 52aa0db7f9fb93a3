//! The live event stream, `GET /api/v1/projects/{id}/live`: the real
//! binary, real WebSockets, events sent through `POST /api/v1/events`.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use orrery_tests::{Api, Server, backends, each_backend};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
/// How long a test waits for something that should come at once.
const WAIT: Duration = Duration::from_secs(20);

fn live_request(
    server: &Server,
    project: &str,
    key: Option<&str>,
    query: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = server
        .url(&format!("/api/v1/projects/{project}/live{query}"))
        .replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    if let Some(key) = key {
        req.headers_mut().insert("X-API-Key", key.parse().unwrap());
    }
    req
}

type Ws = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a subscription, or answers the refusal's status and JSON body.
async fn try_subscribe(
    server: &Server,
    project: &str,
    key: Option<&str>,
    query: &str,
) -> Result<Ws, (u16, Value)> {
    match tokio_tungstenite::connect_async(live_request(server, project, key, query)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("websocket handshake failed: {e}"),
    }
}

/// A subscription to the first project with its admin secret key.
async fn subscribe(server: &Server, query: &str) -> Ws {
    let keys = server.keys.clone();
    try_subscribe(server, &keys.project_id, Some(&keys.secret_key), query)
        .await
        .unwrap_or_else(|(s, b)| panic!("subscribe refused: {s} {b}"))
}

/// The next message that is not a heartbeat, as JSON.
async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the wait")
            .expect("the stream is open")
            .expect("a frame");
        match &msg {
            Message::Text(t)
                if serde_json::from_str::<Value>(t).unwrap()["type"] == "heartbeat" => {}
            Message::Ping(_) | Message::Pong(_) => {}
            _ => return msg,
        }
    }
}

/// The next event message's event.
async fn next_event<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    match next_message(ws).await {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "event", "{v}");
            v["event"].clone()
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

/// `n` events of the first project until the one whose `n` property is
/// `last` (included).
async fn events_until<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    last: i64,
) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let e = next_event(ws).await;
        let done = e["properties"]["n"] == last;
        got.push(e);
        if done {
            return got;
        }
    }
}

fn numbered(name: &str, range: std::ops::Range<i64>) -> Value {
    let batch: Vec<Value> = range
        .map(|n| json!({"event": name, "properties": {"n": n}}))
        .collect();
    json!({ "batch": batch })
}

async fn post(server: &impl Api, key: &str, body: Value) {
    let (status, answer) = server
        .post_events(key, &[("User-Agent", CHROME)], body)
        .await;
    assert_eq!(status, 200, "{answer}");
}

fn numbers(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["properties"]["n"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn committed_events_arrive_enriched_in_order_once() {
    each_backend("live: arrive", &[], async |server| {
        let mut ws = subscribe(server, "").await;
        let pk = server.keys.public_key.clone();
        for start in [0, 5, 10] {
            post(server, &pk, numbered("view", start..start + 5)).await;
        }
        // The same id twice: stored once, streamed once.
        let id = uuid::Uuid::new_v4().to_string();
        for _ in 0..2 {
            post(
                server,
                &pk,
                json!({"event": "dup", "id": id, "properties": {"n": 15}}),
            )
            .await;
        }
        post(server, &pk, numbered("view", 16..17)).await;
        let got = events_until(&mut ws, 16).await;
        assert_eq!(numbers(&got), (0..17).collect::<Vec<_>>());
        let ids: HashSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), got.len(), "each event once");
        // Enriched: what the built-in plugins add, as stored.
        assert_eq!(got[0]["enrichment"]["browser"], "Chrome", "{}", got[0]);
        assert!(got[0]["ip_hash"].is_string(), "{}", got[0]);
        // The same object `list_events` shows.
        let stored = server.all_events("", 100).await;
        for e in &got {
            let s = stored.iter().find(|s| s["id"] == e["id"]).unwrap();
            assert_eq!(s, e);
        }
    })
    .await;
}

#[tokio::test]
async fn filters_by_name_and_property_and_heartbeats() {
    let server = Server::sqlite(&[("ORRERY_LIVE__HEARTBEAT_SECS", "1")]).await;
    let mut ws = subscribe(
        &server,
        "?event=signup&event=buy&property=plan=pro&property=seats.count=3",
    )
    .await;
    let pk = server.keys.public_key.clone();
    let pro = json!({"plan": "pro", "seats": {"count": 3}});
    let batch = json!({"batch": [
        {"event": "signup", "properties": {"plan": "pro", "seats": {"count": 3}, "n": 1}},
        {"event": "view", "properties": {"plan": "pro", "seats": {"count": 3}, "n": 2}},
        {"event": "buy", "properties": {"plan": "free", "seats": {"count": 3}, "n": 3}},
        {"event": "buy", "properties": {"plan": "pro", "n": 4}},
        {"event": "buy", "properties": {"plan": "pro", "seats": {"count": 3}, "n": 5}},
    ]});
    post(&server, &pk, batch).await;
    let got = events_until(&mut ws, 5).await;
    assert_eq!(numbers(&got), vec![1, 5], "{got:?}");
    assert_eq!(got[1]["properties"]["plan"], pro["plan"]);
    // An idle stream still hears from the server.
    let beat = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a heartbeat")
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(beat.to_text().unwrap()).unwrap(),
        json!({"type": "heartbeat"})
    );
    // Closing: the server answers the close frame and forgets the
    // subscriber.
    ws.close(None).await.unwrap();
    let reply = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(reply, "a close reply");
    tokio::time::timeout(WAIT, async {
        while server.metric("orrery_live_subscribers").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the subscriber is gone from the gauge");
}

#[tokio::test]
async fn replay_then_live_with_no_gap_and_no_duplicate() {
    each_backend("live: replay", &[], async |server| {
        let pk = server.keys.public_key.clone();
        post(server, &pk, numbered("view", 0..30)).await;
        // Nothing is live yet: the last 10, oldest first, then live ones.
        let mut ws = subscribe(server, "?replay=10").await;
        let replayed: Vec<Value> = {
            let mut v = Vec::new();
            for _ in 0..10 {
                v.push(next_event(&mut ws).await);
            }
            v
        };
        assert_eq!(numbers(&replayed), (20..30).collect::<Vec<_>>());
        post(server, &pk, numbered("view", 30..35)).await;
        assert_eq!(
            numbers(&events_until(&mut ws, 34).await),
            (30..35).collect::<Vec<_>>()
        );

        // Subscribing while events keep coming: one contiguous run from the
        // replay into the live ones.
        let sender = {
            let base = server.base.clone();
            let pk = pk.clone();
            tokio::spawn(async move {
                let client = orrery_tests::client();
                for n in 35..235 {
                    let resp = client
                        .post(format!("{base}/api/v1/events"))
                        .header("X-API-Key", &pk)
                        .json(&json!({"event": "view", "properties": {"n": n}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                }
            })
        };
        // Let a few be stored first, then subscribe mid-stream.
        tokio::time::timeout(WAIT, async {
            while server.all_events("&event=view", 1000).await.len() < 60 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("events stored");
        let mut ws = subscribe(server, "?replay=20&event=view").await;
        sender.await.unwrap();
        let got = numbers(&events_until(&mut ws, 234).await);
        let first = got[0];
        assert!(
            first >= 40,
            "at most 20 replayed before the live ones: {got:?}"
        );
        assert_eq!(
            got,
            (first..235).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
    })
    .await;
}

#[tokio::test]
async fn only_a_secret_key_of_the_project_subscribes() {
    let server = Server::sqlite(&[("ORRERY_LIVE__MAX_SUBSCRIBERS", "1")]).await;
    let project = server.keys.project_id.clone();
    let other = server
        .create_project(&server.keys.secret_key, "other")
        .await;
    for (key, status, code) in [
        (Some(other.secret_key.as_str()), 404, "not_found"),
        (Some(server.keys.public_key.as_str()), 403, "forbidden"),
        (Some("sk_nonsense"), 401, "invalid_key"),
        (None, 401, "unauthorized"),
    ] {
        let (got, body) = try_subscribe(&server, &project, key, "")
            .await
            .err()
            .unwrap_or_else(|| panic!("{key:?} subscribed"));
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{key:?}: {body}"
        );
    }
    // The other project's own key is fine for its own stream.
    let mut theirs = try_subscribe(&server, &other.project_id, Some(&other.secret_key), "")
        .await
        .unwrap();
    // One subscriber per instance here: the next one is told to come back.
    let (status, body) = try_subscribe(&server, &project, Some(&server.keys.secret_key), "")
        .await
        .expect_err("over live.max_subscribers");
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // Its events only: nothing of the first project.
    post(&server, &server.keys.public_key, numbered("mine", 0..3)).await;
    post(&server, &other.public_key, numbered("theirs", 0..1)).await;
    let e = next_event(&mut theirs).await;
    assert_eq!(e["event"], "theirs");
}

#[tokio::test]
async fn bad_options_are_refused_naming_the_parameter() {
    let server = Server::sqlite(&[]).await;
    let project = server.keys.project_id.clone();
    let sk = server.keys.secret_key.clone();
    for (query, param) in [
        ("?replay=1001", "replay"),
        ("?replay=-1", "replay"),
        ("?replay=ten", "replay"),
        ("?property=plan", "property"),
        ("?property==pro", "property"),
        ("?event=", "event"),
    ] {
        let (status, body) = try_subscribe(&server, &project, Some(&sk), query)
            .await
            .err()
            .unwrap_or_else(|| panic!("{query} accepted"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{param}`")),
            "{query}: {body}"
        );
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = try_subscribe(&server, &unknown, Some(&sk), "")
        .await
        .expect_err("no such project");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // The stream still works after all that.
    let mut ws = subscribe(&server, "?replay=1000").await;
    post(&server, &server.keys.public_key, numbered("ok", 0..1)).await;
    assert_eq!(next_event(&mut ws).await["event"], "ok");
}

#[tokio::test]
async fn a_subscriber_on_one_instance_sees_events_of_every_instance_once() {
    if !backends("live: two instances").contains(&orrery_tests::Backend::Postgres) {
        return;
    }
    let a = Server::on(orrery_tests::Backend::Postgres, &[]).await;
    let b = a.another_instance(&[]);
    let mut on_b = subscribe(&b, "").await;
    let mut on_a = subscribe(&a, "").await;
    let pk = a.keys.public_key.clone();
    // Interleaved, so that the two writers' sequence numbers interleave.
    for round in 0..10 {
        post(&a, &pk, numbered("from_a", round * 10..round * 10 + 5)).await;
        post(&b, &pk, numbered("from_b", round * 10 + 5..round * 10 + 10)).await;
    }
    post(&a, &pk, numbered("end", 100..101)).await;
    for (name, ws) in [("on b", &mut on_b), ("on a", &mut on_a)] {
        let got = events_until(ws, 100).await;
        let mut n = numbers(&got);
        n.sort_unstable();
        assert_eq!(n, (0..101).collect::<Vec<_>>(), "{name}: each event once");
        // Each instance's own events in the order they were sent.
        for source in ["from_a", "from_b"] {
            let mine: Vec<i64> = numbers(
                &got.iter()
                    .filter(|e| e["event"] == source)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(mine, sorted, "{name}: {source} in order");
        }
    }
    // Nothing more comes (a duplicate would be there by now).
    post(&b, &pk, numbered("end", 101..102)).await;
    assert_eq!(numbers(&events_until(&mut on_a, 101).await), vec![101]);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_nobody_else_waits() {
    let server = Server::sqlite(&[("ORRERY_LIVE__QUEUE_EVENTS", "500")]).await;
    // A client that never reads, with a small receive buffer so that the
    // server's writes stall soon.
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let keys = server.keys.clone();
    let (mut slow, _) = tokio_tungstenite::client_async(
        live_request(&server, &keys.project_id, Some(&keys.secret_key), ""),
        stream,
    )
    .await
    .unwrap();
    let mut reader = subscribe(&server, "").await;
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let e = next_event(&mut reader).await;
            let n = e["properties"]["n"].as_i64().unwrap();
            seen.push(n);
            if n == -1 {
                return seen;
            }
        }
    });
    // Send until the slow one is dropped: every batch acknowledged.
    let mut sent = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while server.metric("orrery_live_slow_consumers_dropped").await < 1.0 {
            post(
                &server,
                &keys.public_key,
                numbered("view", sent..sent + 100),
            )
            .await;
            sent += 100;
        }
    })
    .await
    .expect("the slow consumer is dropped");
    for _ in 0..5 {
        post(
            &server,
            &keys.public_key,
            numbered("view", sent..sent + 100),
        )
        .await;
        sent += 100;
    }
    post(&server, &keys.public_key, numbered("end", -1..0)).await;
    let seen = tokio::time::timeout(Duration::from_secs(120), collector)
        .await
        .expect("the normal subscriber keeps up")
        .unwrap();
    let mut want: Vec<i64> = (0..sent).collect();
    want.push(-1);
    assert_eq!(seen, want, "the normal subscriber got everything, in order");
    // The slow one, reading at last: what was in flight, then the reason.
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame");
    let frame = close.expect("a close frame with a reason");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "slow consumer");
    drop(slow);
    tokio::time::timeout(WAIT, async {
        while server.metric("orrery_live_subscribers").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every subscriber gone from the gauge");
}

#[tokio::test]
async fn stopping_the_server_closes_the_streams_without_waiting_for_them() {
    let mut server = Server::sqlite(&[]).await;
    let mut ws = subscribe(&server, "").await;
    // The graceful shutdown waits up to 30 s (http.shutdown_timeout_secs)
    // for connections; a stream must not hold it that long.
    assert_eq!(server.stop(Duration::from_secs(10)), Some(true));
    match next_message(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away, "{frame:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
