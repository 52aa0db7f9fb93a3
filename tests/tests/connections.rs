//! The connection layer through the real binary and raw sockets: slow,
//! idle and silent clients are closed while others are served; connection
//! caps; errors below the API in the JSON shape; body-read failures told
//! apart; HTTP/2 stream limits.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::time::{Duration, Instant};

use orrery_tests::{Server, client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes or `within` passes; answers what was read
/// and whether the peer closed.
async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// One raw request on a new connection; answers (status, headers, JSON
/// body) of the answer, read until the server closes or 5 s pass.
async fn raw(server: &Server, request: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr(server)).await.unwrap();
    s.write_all(request).await.unwrap();
    let (bytes, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    parse_answer(&bytes)
}

fn parse_answer(bytes: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn healthy(server: &Server) {
    let resp = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn slow_silent_and_idle_clients_are_closed_while_others_are_served() {
    let server = Server::sqlite(&[
        ("ORRERY_HTTP__HEADER_READ_TIMEOUT_MS", "600"),
        ("ORRERY_HTTP__IDLE_TIMEOUT_MS", "1500"),
        ("ORRERY_HTTP__BODY_READ_TIMEOUT_MS", "800"),
    ])
    .await;
    let a = addr(&server);

    // A connection that sends nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(&a).await.unwrap();
    // A slowloris: a header byte every 100 ms, never finishing.
    let mut slow = TcpStream::connect(&a).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let slow_task = tokio::spawn(async move {
        let t = Instant::now();
        for _ in 0..100 {
            if slow.write_all(b"a").await.is_err() {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                return Some(t.elapsed());
            }
        }
        None
    });
    // Meanwhile normal requests are served.
    for _ in 0..5 {
        healthy(&server).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, closed) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection stayed open");
    let silent_for = started.elapsed();
    assert!(
        silent_for >= Duration::from_millis(500) && silent_for < Duration::from_secs(4),
        "silent connection closed after {silent_for:?}"
    );
    let slow_for = slow_task
        .await
        .unwrap()
        .expect("the slowloris was never closed");
    assert!(
        slow_for < Duration::from_secs(4),
        "slowloris lasted {slow_for:?}"
    );

    // An idle keep-alive connection: served, then closed after the idle time.
    let mut idle = TcpStream::connect(&a).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let (_, closed) = read_until_close(&mut idle, Duration::from_secs(6)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "closed too early: {:?}",
        t.elapsed()
    );

    // A keep-alive connection in use is not idle: requests 500 ms apart
    // for longer than the idle time all succeed on one connection.
    let mut busy = TcpStream::connect(&a).await.unwrap();
    for i in 0..5 {
        busy.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = busy.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "request {i} on a busy connection"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // An unfinished body: 408 body_timeout, for ingestion and the admin API.
    for path in [
        "/api/v1/events".to_owned(),
        format!("/api/v1/projects/{}", server.keys.project_id),
    ] {
        let method = if path.ends_with("events") {
            "POST"
        } else {
            "PATCH"
        };
        let mut s = TcpStream::connect(&a).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"event\"",
            server.keys.secret_key
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let t = Instant::now();
        let (bytes, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        let (status, _, body) = parse_answer(&bytes);
        assert_eq!(status, 408, "{path}: {body}");
        assert_eq!(body["code"], "body_timeout");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    healthy(&server).await;
    assert!(
        server
            .metric("orrery_http_connections_closed_total{reason=\"header_timeout\"}")
            .await
            >= 2.0
    );
    assert!(
        server
            .metric("orrery_http_connections_closed_total{reason=\"idle_timeout\"}")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric("orrery_http_body_errors_total{reason=\"timeout\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_in_total() {
    let server = Server::sqlite(&[("ORRERY_HTTP__MAX_CONNECTIONS_PER_IP", "4")]).await;
    let a = addr(&server);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&a).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let (status, head, body) = raw(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "too_many_connections");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_connections_per_ip")
    );
    assert!(head.contains("retry-after: 1"), "{head}");
    // One closes: a new one is served again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = raw(
        &server,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    drop(held);
    drop(server);

    // The total cap, with the per-IP cap out of the way.
    let server = Server::sqlite(&[
        ("ORRERY_HTTP__MAX_CONNECTIONS", "3"),
        ("ORRERY_HTTP__MAX_CONNECTIONS_PER_IP", "100"),
    ])
    .await;
    let a = addr(&server);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&a).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = raw(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("http.max_connections"),
        "{body}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    healthy(&server).await;
    assert!(
        server
            .metric("orrery_http_connections_refused_total{reason=\"max_connections\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn errors_below_the_api_have_the_json_shape() {
    let server = Server::sqlite(&[]).await;
    let json_error = |status: u16, code: &str, got: &(u16, String, Value)| {
        assert_eq!(got.0, status, "{code}: {:?}", got.2);
        assert_eq!(got.2["code"], code, "{:?}", got.2);
        assert!(got.2["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            got.1.contains("content-type: application/json"),
            "{}",
            got.1
        );
    };
    // Malformed request lines and headers, answered by hyper itself.
    json_error(
        400,
        "malformed_request",
        &raw(&server, b"GARBAGE\r\n\r\n").await,
    );
    json_error(
        400,
        "malformed_request",
        &raw(
            &server,
            b"GET /health HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        )
        .await,
    );
    // A head over http.max_header_bytes (32 KiB).
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    json_error(
        431,
        "headers_too_large",
        &raw(&server, big.as_bytes()).await,
    );
    // A target over http.max_uri_bytes (16 KiB) but within the head limit.
    let long = format!(
        "GET /health?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(20_000)
    );
    json_error(414, "uri_too_long", &raw(&server, long.as_bytes()).await);
    // Two Host headers.
    json_error(
        400,
        "invalid_header",
        &raw(
            &server,
            b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        )
        .await,
    );
    // A method the route does not have: 405 with Allow.
    let got = raw(
        &server,
        b"DELETE /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    json_error(405, "method_not_allowed", &got);
    assert!(got.1.contains("\r\nallow: post"), "{}", got.1);
    let pid = &server.keys.project_id;
    let got = raw(
        &server,
        format!("PUT /api/v1/projects/{pid}/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    json_error(405, "method_not_allowed", &got);
    assert!(
        got.1.contains("\r\nallow: post, get") || got.1.contains("\r\nallow: get, post"),
        "{}",
        got.1
    );

    // Broken chunked framing: 400 malformed_body, not 413.
    for (method, path, key) in [
        ("POST", "/api/v1/events".to_owned(), &server.keys.public_key),
        (
            "PATCH",
            format!("/api/v1/projects/{pid}"),
            &server.keys.secret_key,
        ),
    ] {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\nnot a chunk\r\n"
        );
        json_error(400, "malformed_body", &raw(&server, req.as_bytes()).await);
    }
    // A client that goes away mid-body gets no answer, and is counted as
    // aborted, not as a body too large.
    let too_large_before = server
        .metric("orrery_http_body_errors_total{reason=\"too_large\"}")
        .await;
    {
        let mut s = TcpStream::connect(addr(&server)).await.unwrap();
        let req = format!(
            "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"event\":",
            server.keys.public_key
        );
        s.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .metric("orrery_http_body_errors_total{reason=\"aborted\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the abort was not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server
            .metric("orrery_http_body_errors_total{reason=\"too_large\"}")
            .await,
        too_large_before
    );
    assert!(
        server
            .metric("orrery_http_body_errors_total{reason=\"malformed\"}")
            .await
            >= 2.0
    );
    assert!(
        server
            .metric("orrery_http_protocol_errors_total{reason=\"headers_too_large\"}")
            .await
            >= 1.0
    );

    // And a good event next to all of that is stored.
    let resp = client()
        .post(server.url("/api/v1/events"))
        .header("X-API-Key", &server.keys.public_key)
        .json(&json!({"event": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `POST /api/v1/events`, authority `x`, without Huffman.
fn request_headers() -> Vec<u8> {
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    let path = b"/api/v1/events";
    h.push(0x04); // :path, literal value without indexing
    h.push(path.len() as u8);
    h.extend_from_slice(path);
    h.push(0x01); // :authority
    h.push(1);
    h.push(b'x');
    h
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn http2_streams_are_limited() {
    let server = Server::sqlite(&[]).await;
    let pid = server.pid().unwrap();
    // Warm up, then measure.
    healthy(&server).await;
    let rss_before = rss_kb(pid);
    let mut s = TcpStream::connect(addr(&server)).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    s.write_all(&out).await.unwrap();
    // 10,000 streams, each a request whose body never comes.
    let headers = request_headers();
    let (mut reader, mut writer) = s.into_split();
    let write = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..10_000u32 {
            batch.extend(frame(0x1, 0x4, 1 + 2 * i, &headers)); // HEADERS, END_HEADERS
            if batch.len() > 64 * 1024 {
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        }
        let _ = writer.write_all(&batch).await;
        // Keep the connection open while the frames are read.
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    // Read the server's frames: its SETTINGS, and a RST_STREAM
    // (REFUSED_STREAM) or a GOAWAY for the streams over the limit.
    let mut buf = Vec::new();
    let mut settings_max_streams = None;
    let mut refused = 0;
    let mut goaway = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = vec![0u8; 65536];
    while Instant::now() < deadline && !goaway && refused < 9_000 {
        match tokio::time::timeout(Duration::from_secs(2), reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = ((buf[0] as usize) << 16) | ((buf[1] as usize) << 8) | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x4 if flags & 1 == 0 => {
                    for s in payload.chunks(6) {
                        if s.len() == 6 && u16::from_be_bytes([s[0], s[1]]) == 0x3 {
                            settings_max_streams =
                                Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                        }
                    }
                }
                0x3 => refused += 1,
                0x7 => goaway = true,
                _ => {}
            }
        }
    }
    assert_eq!(
        settings_max_streams,
        Some(100),
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    assert!(
        refused > 0 || goaway,
        "streams over the limit were neither refused nor answered by GOAWAY"
    );
    let rss_after = rss_kb(pid);
    let grown_mb = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!("HTTP/2 flood: {refused} streams refused, goaway: {goaway}, RSS +{grown_mb:.1} MB");
    assert!(
        grown_mb < 40.0,
        "10,000 streams grew the server by {grown_mb:.1} MB"
    );
    write.abort();
    healthy(&server).await;
}

#[tokio::test]
async fn http2_can_be_switched_off() {
    let server = Server::sqlite(&[("ORRERY_HTTP__HTTP2", "false")]).await;
    let mut s = TcpStream::connect(addr(&server)).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    s.write_all(&out).await.unwrap();
    let (bytes, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an HTTP/2 preface was not refused");
    // No HTTP/2 frames came back: at most an HTTP/1 error.
    assert!(
        bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 "),
        "{bytes:?}"
    );
    healthy(&server).await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed_with_a_reason() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = Server::sqlite(&[
        ("ORRERY_HTTP__IDLE_TIMEOUT_MS", "800"),
        ("ORRERY_EXECUTE__PYTHON", "false"),
    ])
    .await;
    let url = server.url("/api/v1/execute/ws").replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("X-API-Key", server.keys.secret_key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let started = Instant::now();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an idle WebSocket stayed open");
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert!(frame.reason.contains("idle"), "{frame:?}")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(700));
    healthy(&server).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let server = Server::sqlite(&[("ORRERY_HTTP__WRITE_TIMEOUT_MS", "800")]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(addr(&server).parse().unwrap())
        .await
        .unwrap();
    // 300 pipelined requests for the OpenAPI document, answers never read:
    // far more than the socket buffers hold.
    let one = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut all = Vec::new();
    for _ in 0..300 {
        all.extend_from_slice(one);
    }
    let (_reader, mut writer) = stream.into_split();
    let _ = writer.write_all(&all).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while server
        .metric("orrery_http_connections_closed_total{reason=\"write_timeout\"}")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "a client that reads nothing was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    healthy(&server).await;
}
