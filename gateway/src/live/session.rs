//! One live subscriber's WebSocket.
//!
//! Server → client, one JSON object per text message:
//! - `{"type": "event", "event": {...}}`: a committed event, as
//!   `GET /api/v1/projects/{id}/events` shows it; first the replay (the
//!   last `replay` stored events that pass the filter, oldest first), then
//!   live events as they are committed;
//! - `{"type": "heartbeat"}` every `live.heartbeat_secs`;
//! - a close frame with a reason: 1008 `slow consumer` when the
//!   subscriber's queue overflowed, 1001 when the server stops, 1011 when
//!   the replay could not be read.
//!
//! What the client sends is ignored, apart from a close frame.
//!
//! No gap, no duplicate between replay and live: the subscriber is
//! registered before the replay is read, so an event committed meanwhile
//! is queued, and replayed too when it is among the last `replay`; queued
//! events up to the last replayed one are skipped (they were replayed, or
//! are older than the replay).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use orrery_core::config::LiveConfig;
use orrery_core::event::Event;
use orrery_core::store::StoreError;
use poem::web::websocket::{BoxWebSocketUpgraded, CloseCode, Message, WebSocket, WebSocketStream};
use poem_openapi::types::ToJSON;
use serde_json::json;
use uuid::Uuid;

use super::{LiveEvent, LiveFilter, PropertyEquals, Slot, Subscriber};
use crate::api::events::EventOut;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::AppState;

/// The replay reads at most this many stored events looking for matches
/// (a property filter is checked here, not in SQL): a rare property does
/// not turn a connection into a scan of the whole project.
pub const REPLAY_SCAN_LIMIT: usize = 100_000;

/// What a subscriber asked for.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Which events.
    pub filter: LiveFilter,
    /// How many stored events to send first.
    pub replay: usize,
}

impl LiveOptions {
    /// Reads the query options: `event` (names), `property`
    /// (`path=value`), `replay` (0 to `live.max_replay`).
    ///
    /// # Errors
    /// 400 `invalid_parameter` naming the parameter.
    pub fn parse(
        config: &LiveConfig,
        events: Vec<String>,
        properties: Vec<String>,
        replay: Option<u64>,
    ) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::bad_request(ErrorCode::InvalidParameter, m);
        if events.iter().any(|e| e.is_empty()) {
            return Err(bad("`event` must not be empty".to_owned()));
        }
        let properties = properties
            .iter()
            .map(|p| PropertyEquals::parse(p).map_err(|m| bad(format!("`property` {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let replay = replay.unwrap_or(0);
        let max = config.max_replay;
        let replay = usize::try_from(replay)
            .ok()
            .filter(|r| *r <= max)
            .ok_or_else(|| {
                bad(format!(
                    "`replay` must be between 0 and {max} (live.max_replay), not {replay}"
                ))
            })?;
        Ok(Self {
            filter: LiveFilter::new(events, properties),
            replay,
        })
    }
}

/// Accepts a subscriber of `project` (whose credential the caller has
/// checked): 404 when the project does not exist, 503 when
/// `live.max_subscribers` are connected; then upgrades the connection and
/// streams.
///
/// # Errors
/// 404 `not_found`, 503 `unavailable`, or the database's error.
pub async fn upgrade(
    state: AppState,
    project: Uuid,
    options: LiveOptions,
    ws: WebSocket,
) -> ApiResult<BoxWebSocketUpgraded> {
    state.store.get_project(project).await?;
    let slot = state.live.reserve().ok_or_else(|| {
        ApiError::unavailable(
            ErrorCode::Unavailable,
            format!(
                "{} live subscribers are connected to this instance (live.max_subscribers)",
                state.config.live.max_subscribers
            ),
            1,
        )
    })?;
    Ok(ws
        .on_upgrade(move |socket| serve(state, project, options, slot, socket))
        .boxed())
}

/// `{"type": "event", "event": {...}}` for `event`.
pub fn event_message(event: Event) -> String {
    let out = EventOut::from(event).to_json().unwrap_or_default();
    json!({"type": "event", "event": out}).to_string()
}

type Tx = futures_util::stream::SplitSink<WebSocketStream, Message>;

/// Why the stream ended.
enum End {
    /// The client went away, or a write failed or timed out.
    Gone,
    /// The client sent a close frame (it gets the reply).
    ClientClosed,
    /// Closed by the server with this code and reason.
    Close(CloseCode, String),
}

async fn serve(
    state: AppState,
    project: Uuid,
    options: LiveOptions,
    slot: Slot,
    socket: WebSocketStream,
) {
    let (mut tx, mut rx) = socket.split();
    let write_timeout = Duration::from_millis(state.config.http.write_timeout_ms.max(1));
    let registration = state.live.subscribe(slot, project, options.filter.clone());
    let subscriber = registration.subscriber();
    let slow = || End::Close(CloseCode::Policy, "slow consumer".to_owned());
    let end = async {
        // Replay after registering: what is committed meanwhile is queued.
        let mut replayed = HashSet::new();
        if options.replay > 0 {
            let events = match replay(&state, project, &options).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%project, %error, "live: cannot read the replay");
                    return End::Close(
                        CloseCode::Error,
                        "the replay could not be read; reconnect".to_owned(),
                    );
                }
            };
            replayed = events.iter().map(|e| e.id).collect();
            let messages = events
                .into_iter()
                .map(|e| Message::Text(event_message(e)))
                .collect();
            match send_all(&state, subscriber, &mut tx, messages, write_timeout).await {
                Sent::Done => {}
                Sent::Gone => return End::Gone,
                Sent::Slow => return slow(),
            }
        }
        let period = Duration::from_secs(state.config.live.heartbeat_secs);
        let mut heartbeat = (!period.is_zero()).then(|| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let tick = async {
                match heartbeat.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let messages = tokio::select! {
                next = subscriber.next() => {
                    let Ok(events) = next else {
                        return slow();
                    };
                    messages(&state, project, events, &mut replayed).await
                }
                () = tick => vec![Message::Text(json!({"type": "heartbeat"}).to_string())],
                () = state.live.closed() => {
                    return End::Close(CloseCode::Away, "the server is shutting down".to_owned());
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    None | Some(Err(_)) => return End::Gone,
                    Some(Ok(_)) => continue,
                },
            };
            match send_all(&state, subscriber, &mut tx, messages, write_timeout).await {
                Sent::Done => {}
                Sent::Gone => return End::Gone,
                Sent::Slow => return slow(),
            }
        }
    }
    .await;
    // Unsubscribe before the (possibly slow) close.
    drop(registration);
    match end {
        End::Close(code, reason) => {
            let _ = send(&mut tx, Message::Close(Some((code, reason))), write_timeout).await;
        }
        // Sends the reply the WebSocket queued when the close frame came.
        End::ClientClosed => {
            let _ = tokio::time::timeout(write_timeout, tx.close()).await;
        }
        End::Gone => {}
    }
}

/// The messages for `events`: those not already replayed, through the
/// project's query stages when it has some.
async fn messages(
    state: &AppState,
    project: Uuid,
    events: Vec<Arc<LiveEvent>>,
    replayed: &mut HashSet<Uuid>,
) -> Vec<Message> {
    let events: Vec<Arc<LiveEvent>> = if replayed.is_empty() {
        events
    } else {
        // Queued before a replayed event means committed before it: either
        // replayed too or older than the replay. Both are skipped, so that
        // live events follow the replay in order.
        let start = events
            .iter()
            .rposition(|e| replayed.contains(&e.event.id))
            .map_or(0, |i| i + 1);
        for e in &events[..start] {
            replayed.remove(&e.event.id);
        }
        events
            .into_iter()
            .skip(start)
            .filter(|e| !replayed.remove(&e.event.id))
            .collect()
    };
    match state
        .pipelines
        .query_for_project(&state.store, project)
        .await
    {
        None => events
            .iter()
            .map(|e| Message::Text(e.message().to_owned()))
            .collect(),
        Some(query) => {
            let plain = events.iter().map(|e| e.event.clone()).collect();
            crate::pipelines::read_through(&query, plain)
                .await
                .into_iter()
                .map(|e| Message::Text(event_message(e)))
                .collect()
        }
    }
}

/// The last `options.replay` stored events of `project` that pass the
/// filter, oldest first.
async fn replay(
    state: &AppState,
    project: Uuid,
    options: &LiveOptions,
) -> Result<Vec<Event>, StoreError> {
    let want = options.replay;
    // Without a property filter every row read is a match.
    let page = if options.filter.has_properties() {
        1000
    } else {
        want
    };
    let mut out = Vec::with_capacity(want);
    let mut before = None;
    let mut scanned = 0;
    while out.len() < want && scanned < REPLAY_SCAN_LIMIT {
        let rows = state
            .store
            .recent_events(project, options.filter.names(), before, page as u64)
            .await?;
        scanned += rows.events.len();
        let room = want - out.len();
        out.extend(
            rows.events
                .into_iter()
                .map(|s| s.event)
                .filter(|e| options.filter.matches(e))
                .take(room),
        );
        match rows.next_before_seq {
            Some(seq) => before = Some(seq),
            None => break,
        }
    }
    out.reverse();
    let out = match state
        .pipelines
        .query_for_project(&state.store, project)
        .await
    {
        Some(query) => crate::pipelines::read_through(&query, out).await,
        None => out,
    };
    Ok(out)
}

/// How a write ended.
enum Sent {
    /// Written and flushed.
    Done,
    /// The client is gone, or did not take the data within the timeout.
    Gone,
    /// The subscriber was found slow while writing (what was written
    /// stays buffered, ahead of the close frame).
    Slow,
}

/// Writes `messages` and flushes once; counts them as delivered. Gives up
/// when the subscriber is found slow meanwhile (a pending flush resumes
/// where it was, so the close frame follows whole messages).
async fn send_all(
    state: &AppState,
    subscriber: &Subscriber,
    tx: &mut Tx,
    messages: Vec<Message>,
    timeout: Duration,
) -> Sent {
    if messages.is_empty() {
        return Sent::Done;
    }
    let n = messages.len() as u64;
    let write = async {
        for m in messages {
            tx.feed(m).await?;
        }
        tx.flush().await
    };
    tokio::select! {
        written = tokio::time::timeout(timeout, write) => match written {
            Ok(Ok(())) => {
                state.live.metrics.delivered.inc_by(n);
                Sent::Done
            }
            _ => Sent::Gone,
        },
        () = subscriber.slowed() => Sent::Slow,
    }
}

async fn send(tx: &mut Tx, msg: Message, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tx.send(msg)).await,
        Ok(Ok(()))
    )
}
