//! The code-execution service end to end against the real binary: Python
//! and WebAssembly over REST, uploaded modules, the WebSocket stream,
//! rights, rate limits and saturation.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use orrery_tests::{Server, client};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn exec(server: &Server, key: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(server.url("/api/v1/execute"))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut v: Value = resp.json().await.unwrap_or(Value::Null);
    if let Some(r) = retry {
        v["retry_after_header"] = json!(r);
    }
    (status, v)
}

async fn py(server: &Server, code: &str) -> Value {
    let (status, v) = exec(
        server,
        &server.keys.secret_key,
        json!({"language": "python", "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{code}: {v}");
    v
}

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hi\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

#[tokio::test]
async fn python_over_rest() {
    let s = Server::sqlite(&[]).await;
    let v = py(&s, "print(sum(range(1000)))").await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["stdout"], "499500\n");
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);

    let v = py(&s, "x = 6 * 7\nx").await;
    assert_eq!(v["value"], "42");

    let v = py(&s, "import json, statistics, math, random, datetime, collections\nprint(json.dumps(statistics.mean([1, 2, 3])))").await;
    assert_eq!(v["stdout"], "2\n", "{v}");

    let (_, v) = exec(
        &s,
        &s.keys.secret_key,
        json!({"language": "python", "code": "print(input()[::-1])", "stdin": "abc\n"}),
    )
    .await;
    assert_eq!(v["stdout"], "cba\n", "{v}");

    let v = py(&s, "print('héllo ✓ 🌍')").await;
    assert_eq!(v["stdout"], "héllo ✓ 🌍\n");

    let v = py(&s, "def f():\n    return 1 / 0\nf()").await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["error"]["type"], "ZeroDivisionError");
    let tb = v["error"]["traceback"].as_str().unwrap();
    assert!(tb.contains("line 2"), "{tb}");
    assert!(
        !tb.contains("orrery") && !tb.contains(".py\""),
        "only the user's lines: {tb}"
    );

    let (status, v) = exec(
        &s,
        &s.keys.secret_key,
        json!({"language": "python", "code": "while True: pass", "limits": {"wall_time_ms": 400, "cpu_time_ms": 300}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "limit_exceeded", "{v}");
    assert!(
        ["wall_time", "cpu_time"].contains(&v["limit"]["what"].as_str().unwrap()),
        "{v}"
    );

    let (status, v) = exec(&s, &s.keys.secret_key, json!({"language": "python"})).await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "invalid_request");
    assert!(v["message"].as_str().unwrap().contains("code"));
    let (status, _) = exec(
        &s,
        &s.keys.secret_key,
        json!({"language": "cobol", "code": "x"}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn escapes_over_http_are_contained_and_the_gateway_keeps_serving() {
    let s = Server::sqlite(&[]).await;
    for code in [
        "().__class__.__base__.__subclasses__()",
        "__import__('os').system('id')",
        "import os",
        "open('/etc/passwd').read()",
        "import random\nrandom._os.system('id')",
        "'{0.__class__}'.format(1)",
        "getattr(1, '__class__')",
    ] {
        let v = py(&s, code).await;
        assert!(
            ["rejected", "error"].contains(&v["status"].as_str().unwrap()),
            "{code} was not stopped: {v}"
        );
        assert!(
            !v["stdout"].as_str().unwrap().contains("root:"),
            "{code}: {v}"
        );
    }
    let v = py(&s, "x = 'a' * (10 ** 10)").await;
    assert_eq!(v["status"], "limit_exceeded", "{v}");
    let health = client().get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(py(&s, "print(1 + 1)").await["stdout"], "2\n");
}

#[tokio::test]
async fn execution_needs_the_execute_right() {
    let s = Server::sqlite(&[]).await;
    let body = json!({"language": "python", "code": "print(1)"});
    let resp = client()
        .post(s.url("/api/v1/execute"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "anonymous callers cannot run code");
    let (status, v) = exec(&s, &s.keys.public_key, body.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(v["code"], "forbidden");
    // An execute-only key.
    let resp = client()
        .post(s.url(&format!("/api/v1/projects/{}/keys", s.keys.project_id)))
        .header("X-API-Key", &s.keys.secret_key)
        .json(&json!({"name": "runner", "kind": "execute"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let xk = resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(xk.starts_with("xk_"));
    let (status, v) = exec(&s, &xk, body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stdout"], "1\n");
    // ...which can do nothing else.
    let resp = client()
        .get(s.url(&format!("/api/v1/projects/{}/events", s.keys.project_id)))
        .header("X-API-Key", &xk)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .post(s.url("/api/v1/events"))
        .header("X-API-Key", &xk)
        .json(&json!({"event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn wasm_inline_and_uploaded_modules_persist() {
    let mut s = Server::sqlite(&[]).await;
    let sk = s.keys.secret_key.clone();
    let (status, v) = exec(&s, &sk, json!({"language": "wasm", "code": HELLO_WAT})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["exit_code"], 0);

    let upload = |body: Vec<u8>| {
        client()
            .post(s.url("/api/v1/wasm/modules?name=hello"))
            .header("X-API-Key", &sk)
            .header("content-type", "application/wasm")
            .body(body)
            .send()
    };
    let resp = upload(b"\x00asm garbage".to_vec()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "invalid_module");
    let resp = upload(b"(module (func (export \"main\")))".to_vec())
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a module without _start");
    let v: Value = resp.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("_start"), "{v}");

    let resp = upload(HELLO_WAT.as_bytes().to_vec()).await.unwrap();
    assert_eq!(resp.status(), 201);
    let module: Value = resp.json().await.unwrap();
    let id = module["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(module["name"], "hello");
    for _ in 0..2 {
        let (status, v) = exec(&s, &sk, json!({"language": "wasm", "module_id": id})).await;
        assert_eq!(status, 200);
        assert_eq!(v["stdout"], "hi\n");
    }
    // Survives a restart.
    assert!(s.terminate());
    s.spawn();
    let list: Value = client()
        .get(s.url("/api/v1/wasm/modules"))
        .header("X-API-Key", &sk)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["modules"][0]["id"], id.as_str());
    let resp = client()
        .delete(s.url(&format!("/api/v1/wasm/modules/{id}")))
        .header("X-API-Key", &sk)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, v) = exec(&s, &sk, json!({"language": "wasm", "module_id": id})).await;
    assert_eq!(status, 404, "{v}");
    // Hostile WASM is stopped by its limits.
    let spin = "(module (func (export \"_start\") (loop (br 0))))";
    let (_, v) = exec(
        &s,
        &sk,
        json!({"language": "wasm", "code": spin, "limits": {"wall_time_ms": 300}}),
    )
    .await;
    assert_eq!(v["status"], "limit_exceeded", "{v}");
    let grow = "(module (memory 1) (func (export \"_start\") (loop (drop (memory.grow (i32.const 100))) (br 0))))";
    let (_, v) = exec(
        &s,
        &sk,
        json!({"language": "wasm", "code": grow, "limits": {"wall_time_ms": 2000}}),
    )
    .await;
    assert!(
        ["limit_exceeded", "error"].contains(&v["status"].as_str().unwrap()),
        "{v}"
    );
    let (status, v) = exec(&s, &sk, json!({"language": "wasm", "module": "%%%"})).await;
    assert_eq!(status, 400, "{v}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(s: &Server) -> Ws {
    let url = s.url("/api/v1/execute/ws").replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("X-API-Key", s.keys.secret_key.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket")
        .0
}

async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads messages until a `result` (or `error` when `stop_on_error`).
async fn ws_until_result(ws: &mut Ws) -> Vec<(Instant, Value)> {
    let mut got = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            let done = v["type"] == "result";
            got.push((Instant::now(), v));
            if done {
                return got;
            }
        }
    }
}

#[tokio::test]
async fn websocket_streams_output_as_it_is_written() {
    let s = Server::sqlite(&[]).await;
    let mut ws = ws_connect(&s).await;
    let code = "import datetime\nprint('first', flush=True)\nt = datetime.datetime.now()\nwhile (datetime.datetime.now() - t).total_seconds() < 0.6:\n    pass\nprint('second')";
    ws_send(
        &mut ws,
        json!({"type": "execute", "language": "python", "code": code}),
    )
    .await;
    let msgs = ws_until_result(&mut ws).await;
    let first = msgs
        .iter()
        .find(|(_, v)| v["type"] == "stdout" && v["data"].as_str().unwrap().contains("first"))
        .expect("first chunk streamed");
    let (done_at, result) = msgs.last().unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout"], "first\nsecond\n");
    assert!(
        done_at.duration_since(first.0) >= Duration::from_millis(300),
        "the first chunk came with the result, not as it was written"
    );

    // Same connection: interactive stdin.
    ws_send(
        &mut ws,
        json!({"type": "execute", "language": "python", "interactive": true,
        "code": "name = input()\nprint('hi ' + name)"}),
    )
    .await;
    ws_send(&mut ws, json!({"type": "stdin", "data": "bob\n"})).await;
    let msgs = ws_until_result(&mut ws).await;
    assert_eq!(msgs.last().unwrap().1["stdout"], "hi bob\n", "{msgs:?}");

    // A malformed message gets an error; the connection stays usable.
    ws.send(Message::Text("{nope".into())).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let err: Value = serde_json::from_str(err.to_text().unwrap()).unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "invalid_message");

    // Cancel.
    ws_send(
        &mut ws,
        json!({"type": "execute", "language": "python", "code": "while True: pass"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws_send(&mut ws, json!({"type": "cancel"})).await;
    let msgs = ws_until_result(&mut ws).await;
    assert_eq!(msgs.last().unwrap().1["status"], "cancelled");

    // A WASM loop, cancelled.
    let spin = "(module (func (export \"_start\") (loop (br 0))))";
    ws_send(
        &mut ws,
        json!({"type": "execute", "language": "wasm", "code": spin}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws_send(&mut ws, json!({"type": "cancel"})).await;
    let msgs = ws_until_result(&mut ws).await;
    assert_eq!(msgs.last().unwrap().1["status"], "cancelled", "{msgs:?}");

    // WASM over the socket.
    ws_send(
        &mut ws,
        json!({"type": "execute", "language": "wasm", "code": HELLO_WAT}),
    )
    .await;
    let msgs = ws_until_result(&mut ws).await;
    assert!(
        msgs.iter()
            .any(|(_, v)| v["type"] == "stdout" && v["data"] == "hi\n")
    );
    assert_eq!(msgs.last().unwrap().1["status"], "completed");
}

#[tokio::test]
async fn saturation_answers_503_and_normal_work_continues() {
    let s = Server::sqlite(&[
        ("ORRERY_EXECUTE__MAX_RUNNING", "1"),
        ("ORRERY_EXECUTE__MAX_QUEUED", "1"),
    ])
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (url, key) = (s.url("/api/v1/execute"), s.keys.secret_key.clone());
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("X-API-Key", key)
                .json(&json!({"language": "python", "code": "while True: pass", "limits": {"wall_time_ms": 1000}}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.headers().get("retry-after").is_some())
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
        if status == 503 {
            assert!(retry, "503 carries Retry-After");
            busy += 1;
        }
    }
    assert!(
        busy >= 2,
        "1 running + 1 queued: the rest must be refused ({busy})"
    );
    assert_eq!(
        py(&s, "print('still here')").await["stdout"],
        "still here\n"
    );
}

#[tokio::test]
async fn per_key_rate_limit_answers_429() {
    let s = Server::sqlite(&[("ORRERY_EXECUTE__RATE_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        py(&s, "1").await;
    }
    let (status, v) = exec(
        &s,
        &s.keys.secret_key,
        json!({"language": "python", "code": "1"}),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["code"], "rate_limited");
    assert!(v["retry_after_header"].as_str().is_some());
}
