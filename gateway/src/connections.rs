//! The HTTP connection layer: accepting, bounding and closing connections.
//!
//! poem's own server loop has no read timeouts and no connection caps, so
//! a client sending a header byte a second, or nothing at all, held its
//! connection (and a file descriptor) for ever. This loop serves the same
//! poem application over hyper, and adds:
//!
//! - caps on open connections, in total and per client IP (peers in
//!   `http.trusted_proxies` carry many clients and are exempt from the
//!   per-IP cap); a connection over a cap gets a 503 JSON answer and is
//!   closed at once;
//! - a header-read timeout (a request's head must arrive within it, counted
//!   from its first byte, or from the connection's start for the first
//!   request), an idle timeout (no request in flight), and a write timeout
//!   (a client that stops reading its answer), watched per connection;
//!   body-read timeouts are in [`crate::http::read_body`];
//! - HTTP/2 limits (concurrent streams, header list, windows), or no
//!   HTTP/2 at all (`http.http2 = false`);
//! - the JSON error shape for the errors hyper answers by itself before any
//!   request reaches the application (400 malformed request, 431 head too
//!   large): see `Guarded::poll_write`.
//!
//! Each connection counts its requests in flight (a request is in flight
//! until its answer's body is written); the watchdog only closes a
//! connection with none in flight, so a long execution or a large answer is
//! never cut, except by the write timeout when the client stops reading.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use orrery_core::config::HttpConfig;
use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, IntoResponse};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::error::{ApiError, ErrorCode};
use crate::http_metrics::HttpMetrics;

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one IP (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-IP cap.
    pub trusted_proxies: Vec<IpAddr>,
    /// A request head must be complete within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// Request line plus headers (HTTP/1.1), header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Accept HTTP/2 (cleartext, prior knowledge).
    pub http2: bool,
    /// HTTP/2 streams at once per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of a stream.
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of a connection.
    pub http2_connection_window_bytes: u32,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

impl Limits {
    /// The limits of a configuration.
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            trusted_proxies: http.trusted_proxies.clone(),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
            write_timeout: Duration::from_millis(http.write_timeout_ms),
            max_header_bytes: http.max_header_bytes,
            http2: http.http2,
            http2_max_concurrent_streams: http.http2_max_concurrent_streams,
            http2_stream_window_bytes: http.http2_stream_window_bytes,
            http2_connection_window_bytes: http.http2_connection_window_bytes,
            shutdown_timeout: Duration::from_secs(http.shutdown_timeout_secs),
        }
    }

    /// How often a connection's watchdog looks: a quarter of the shortest
    /// timeout, between 100 ms and 5 s.
    fn tick(&self) -> Duration {
        (self
            .header_read_timeout
            .min(self.idle_timeout)
            .min(self.write_timeout)
            / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Open connections, in total and per IP.
#[derive(Debug, Default)]
struct Slots {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    emptied: Notify,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Total,
    PerIp,
}

/// A held connection slot; freed on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    ip: Option<IpAddr>,
    metrics: HttpMetrics,
}

impl Slots {
    fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
        metrics: &HttpMetrics,
    ) -> Result<Slot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let counted_ip = if limits.trusted_proxies.contains(&ip) {
            None
        } else {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_default();
            if *n >= limits.max_connections_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *n += 1;
            Some(ip)
        };
        metrics.connections_open.inc();
        Ok(Slot {
            slots: self.clone(),
            ip: counted_ip,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self.slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.metrics.connections_open.dec();
        if self.slots.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.slots.emptied.notify_waiters();
        }
    }
}

/// "Never" for the millisecond marks below.
const NONE: u64 = u64::MAX;

/// What the watchdog of one connection reads.
#[derive(Debug)]
struct ConnState {
    started: Instant,
    in_flight: AtomicUsize,
    /// When the last request left (ms since `started`).
    idle_since: AtomicU64,
    /// First byte of a request head not yet complete (ms), or [`NONE`].
    head_started: AtomicU64,
    /// A write waiting for the client since (ms), or [`NONE`].
    write_blocked: AtomicU64,
    /// Seen the HTTP/2 preface.
    h2: AtomicBool,
    /// Whether the protocol is known (first bytes read).
    sniffed: AtomicBool,
    /// Handed to a WebSocket: the watchdog stops.
    upgraded: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's head is due from the start.
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(NONE),
            h2: AtomicBool::new(false),
            sniffed: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy)]
enum Timeout {
    Header,
    Idle,
    Write,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Self::Header => "header_timeout",
            Self::Idle => "idle_timeout",
            Self::Write => "write_timeout",
        }
    }
}

/// Resolves when the connection has passed one of its timeouts.
async fn watchdog(conn: Arc<ConnState>, limits: Limits) -> Timeout {
    let header = limits.header_read_timeout.as_millis() as u64;
    let idle = limits.idle_timeout.as_millis() as u64;
    let write = limits.write_timeout.as_millis() as u64;
    loop {
        tokio::time::sleep(limits.tick()).await;
        if conn.upgraded.load(Ordering::Acquire) {
            // A WebSocket keeps its own time (see execute_ws).
            std::future::pending::<()>().await;
        }
        let now = conn.now();
        let blocked = conn.write_blocked.load(Ordering::Acquire);
        if blocked != NONE && now.saturating_sub(blocked) > write {
            return Timeout::Write;
        }
        if conn.in_flight.load(Ordering::Acquire) > 0 {
            continue;
        }
        let head = conn.head_started.load(Ordering::Acquire);
        if head != NONE && now.saturating_sub(head) > header {
            return Timeout::Header;
        }
        if now.saturating_sub(conn.idle_since.load(Ordering::Acquire)) > idle {
            return Timeout::Idle;
        }
    }
}

/// A request in flight on a connection, until its answer's body is done.
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(conn: &Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head is complete: its timer stops.
        conn.head_started.store(NONE, Ordering::Release);
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

/// An answer's body that keeps its request in flight until it is written.
struct GuardedBody<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket of one connection, watched by its [`ConnState`].
struct Guarded {
    io: TcpStream,
    conn: Arc<ConnState>,
    /// Our answer replacing one that hyper wrote by itself, still to send.
    replacement: Option<(Vec<u8>, usize)>,
    /// Everything hyper writes from now on is discarded (it is closing).
    replaced: bool,
    max_header_bytes: usize,
    /// `http.http2`: hyper's auto builder cannot turn HTTP/2 off on
    /// connections that may upgrade (WebSocket), so it is refused here.
    http2: bool,
    metrics: HttpMetrics,
    _slot: Slot,
}

impl Guarded {
    /// Sends what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `buf` is an answer that hyper made by itself: on HTTP/1,
    /// with no request in flight, not a WebSocket, a whole head with an
    /// empty body and without the `x-request-id` that [`crate::http`] puts
    /// on every answer of the application. (Whether a request is in flight
    /// alone cannot tell: hyper reads a short answer's whole body, which
    /// ends the request, before it writes the head.)
    fn is_hyper_answer(&self, buf: &[u8]) -> bool {
        if self.conn.h2.load(Ordering::Acquire)
            || self.conn.upgraded.load(Ordering::Acquire)
            || self.conn.in_flight.load(Ordering::Acquire) > 0
            || !buf.starts_with(b"HTTP/1.")
        {
            return false;
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = buf[..end].to_ascii_lowercase();
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        !has(b"\r\nx-request-id:") && has(b"\r\ncontent-length: 0")
    }

    /// The JSON answer for hyper's `status`.
    fn json_answer(&self, status: StatusCode) -> Vec<u8> {
        let (code, message) = match status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request line and headers are larger than {} bytes (http.max_header_bytes) \
                     or have more than 100 fields",
                    self.max_header_bytes
                ),
            ),
            StatusCode::URI_TOO_LONG => (
                ErrorCode::UriTooLong,
                "the request target is too long".to_owned(),
            ),
            _ => (
                ErrorCode::MalformedRequest,
                "the request is not valid HTTP/1.1 (request line, header syntax or framing)"
                    .to_owned(),
            ),
        };
        HttpMetrics::count(&self.metrics.protocol_errors, code.as_str());
        raw_answer(&ApiError::new(code, message))
    }
}

/// An [`ApiError`] as the bytes of a whole HTTP/1.1 answer that closes the
/// connection.
fn raw_answer(err: &ApiError) -> Vec<u8> {
    let body = serde_json::json!({"code": err.code.as_str(), "message": err.message}).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\nx-content-type-options: nosniff\r\nx-request-id: {}\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len(),
        uuid::Uuid::new_v4().simple(),
    );
    if let Some(secs) = err.retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let conn = &self.conn;
        if !conn.sniffed.swap(true, Ordering::AcqRel) && read.starts_with(b"PRI ") {
            if !self.http2 {
                HttpMetrics::count(&self.metrics.protocol_errors, "http2_refused");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "HTTP/2 is switched off (http.http2 = false)",
                )));
            }
            // HTTP/2: streams, not heads; only the idle timeout applies.
            conn.h2.store(true, Ordering::Release);
            conn.head_started.store(NONE, Ordering::Release);
            conn.idle_since.store(conn.now(), Ordering::Release);
        }
        if !conn.h2.load(Ordering::Acquire)
            && conn.in_flight.load(Ordering::Acquire) == 0
            && conn.head_started.load(Ordering::Acquire) == NONE
        {
            conn.head_started.store(conn.now(), Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // hyper answers a request it cannot parse (400, 414, 431) by
        // itself, with an empty body, then closes. Such an answer is the
        // only thing hyper writes on an HTTP/1 connection with no request
        // in flight: replace it by the JSON error every other error has.
        if !self.replaced && self.is_hyper_answer(buf) {
            let status = std::str::from_utf8(&buf[9..buf.len().min(12)])
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            let answer = self.json_answer(status);
            self.replacement = Some((answer, 0));
            self.replaced = true;
        }
        if self.replaced {
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => {
                let conn = &self.conn;
                if conn.write_blocked.load(Ordering::Acquire) == NONE {
                    conn.write_blocked.store(conn.now(), Ordering::Release);
                }
                Poll::Pending
            }
            ready => {
                self.conn.write_blocked.store(NONE, Ordering::Release);
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets the requests in flight finish (at most
/// `limits.shutdown_timeout`) and returns.
///
/// # Errors
/// None today; the result leaves room for fatal listener errors.
pub async fn serve<E>(
    listener: TcpListener,
    app: E,
    limits: Limits,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let app = Arc::new(app);
    let local: SocketAddr = listener.local_addr()?;
    let slots = Arc::new(Slots::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let builder = Arc::new(builder(&limits));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors, say: wait instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        metrics.connections_accepted.inc();
        let slot = match slots.take(peer.ip(), &limits, &metrics) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(stream, refusal, &limits, &metrics);
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            // Nagle would hold a second small write (a streamed chunk after
            // a WebSocket `started` message) until the client's delayed ACK.
            debug!(%error, "TCP_NODELAY not set");
        }
        let conn = Arc::new(ConnState::new());
        let io = Guarded {
            io: stream,
            conn: conn.clone(),
            replacement: None,
            replaced: false,
            max_header_bytes: limits.max_header_bytes,
            http2: limits.http2,
            metrics: metrics.clone(),
            _slot: slot,
        };
        tokio::spawn(serve_connection(
            io,
            conn,
            app.clone(),
            builder.clone(),
            Addrs { local, peer },
            limits.clone(),
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async {
        loop {
            let emptied = slots.emptied.notified();
            if slots.total.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    };
    if tokio::time::timeout(limits.shutdown_timeout, drained)
        .await
        .is_err()
    {
        info!(
            open = slots.total.load(Ordering::Acquire),
            "shutdown timeout: closing the connections still open"
        );
    }
    Ok(())
}

/// The hyper connection builder for `limits`.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The read buffer bounds the request head; hyper answers 431 beyond.
    builder
        .http1()
        .max_buf_size(limits.max_header_bytes.max(8192))
        .writev(false);
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .initial_stream_window_size(limits.http2_stream_window_bytes)
        .initial_connection_window_size(limits.http2_connection_window_bytes)
        .max_send_buf_size(limits.http2_stream_window_bytes as usize)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    // `http1_only` would be ignored with upgrades: see `Guarded::http2`.
    builder
}

/// Answers 503 to a connection over a cap and closes it, without waiting
/// for the client: the answer fits the socket's send buffer.
fn refuse(stream: TcpStream, refusal: Refusal, limits: &Limits, metrics: &HttpMetrics) {
    let (reason, message) = match refusal {
        Refusal::Total => (
            "max_connections",
            format!(
                "the server has {} connections open (http.max_connections); retry later",
                limits.max_connections
            ),
        ),
        Refusal::PerIp => (
            "max_connections_per_ip",
            format!(
                "your address has {} connections open (http.max_connections_per_ip); reuse them",
                limits.max_connections_per_ip
            ),
        ),
    };
    HttpMetrics::count(&metrics.connections_refused, reason);
    let answer = raw_answer(&ApiError::unavailable(
        ErrorCode::TooManyConnections,
        message,
        1,
    ));
    let _ = stream.try_write(&answer);
}

#[derive(Debug, Clone, Copy)]
struct Addrs {
    local: SocketAddr,
    peer: SocketAddr,
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<E: Endpoint + 'static>(
    io: Guarded,
    conn: Arc<ConnState>,
    app: Arc<E>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    addrs: Addrs,
    limits: Limits,
    metrics: HttpMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::enter(&conn);
            let app = app.clone();
            let conn = conn.clone();
            async move {
                let req = poem::Request::from((
                    req,
                    LocalAddr(addrs.local.into()),
                    RemoteAddr(addrs.peer.into()),
                    Scheme::HTTP,
                ));
                let resp = app.get_response(req).await.into_response();
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    conn.upgraded.store(true, Ordering::Release);
                }
                let resp: hyper::Response<_> = resp.into();
                Ok::<_, Infallible>(resp.map(|inner| GuardedBody {
                    inner,
                    guard: Some(guard),
                }))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let dog = watchdog(conn.clone(), limits.clone());
    tokio::pin!(dog);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, peer = %addrs.peer, "connection ended with an error");
                }
                return;
            }
            closed = &mut dog => {
                HttpMetrics::count(&metrics.connections_closed, closed.label());
                debug!(peer = %addrs.peer, reason = closed.label(), "closing connection");
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
