//! The writer: one task that turns many requests into few transactions.
//!
//! Requests hand their events to [`Writer::write`] and wait. The writer
//! task gathers what has queued up (up to `flush_events`, waiting at most
//! `flush_interval` for more), commits it in one transaction and only then
//! answers each request: an acknowledged event is a committed event.
//! The queue is bounded in events by a semaphore; when it is full,
//! [`WriteError::QueueFull`] is returned at once instead of growing memory.
//!
//! When a group commit fails, the writer retries request by request, then
//! event by event, so one unstorable event cannot fail its neighbours; an
//! event that cannot be stored alone goes to the dead-letter table.
//!
//! The sessions of stored events are gathered in memory and written every
//! `sessions_flush` (and at shutdown) rather than in every commit; each
//! write also renews this writer's mark and recovers the sessions of
//! writers that died before writing theirs (see [`crate::store::sessions`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::DbErr;
use serde_json::Value;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::event::{Event, now_ms};
use crate::metrics::CoreMetrics;
use crate::store::dead_letters::NewDeadLetter;
use crate::store::events::InsertOutcome;
use crate::store::{EncodedEvent, PendingSessions, Store};

/// Writer tuning (from `IngestConfig`).
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Commit when this many events are gathered.
    pub flush_events: usize,
    /// Wait at most this long for more events after the first.
    pub flush_interval: Duration,
    /// Most events queued across all requests.
    pub queue_capacity: usize,
    /// How often the sessions of stored events are written.
    pub sessions_flush: Duration,
}

/// What became of one event handed to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored.
    Inserted,
    /// Already stored (same project and id).
    Duplicate,
    /// Could not be stored; kept in the dead-letter table.
    DeadLettered(String),
}

/// Why a write was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The queue is full; try again later.
    #[error("the write queue is full")]
    QueueFull,
    /// The writer is shutting down.
    #[error("the server is shutting down")]
    Closed,
    /// The database failed; nothing of this request was stored.
    #[error("the database failed: {0}")]
    Store(Arc<DbErr>),
}

struct Job {
    events: Vec<EncodedEvent>,
    dead: Vec<NewDeadLetter>,
    reply: oneshot::Sender<Result<Vec<WriteOutcome>, WriteError>>,
    _permit: OwnedSemaphorePermit,
}

impl Job {
    fn size(&self) -> usize {
        self.events.len() + self.dead.len()
    }
}

enum Msg {
    Job(Job),
    Close,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    permits: Arc<Semaphore>,
    capacity: usize,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Store, config: WriterConfig, metrics: CoreMetrics) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = config.queue_capacity.max(1);
        let task = tokio::spawn(run(store, config, rx, metrics.clone()));
        Self {
            inner: Arc::new(Inner {
                tx,
                permits: Arc::new(Semaphore::new(capacity)),
                capacity,
                closed: AtomicBool::new(false),
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Events waiting to be committed.
    pub fn queue_depth(&self) -> usize {
        self.inner.capacity - self.inner.permits.available_permits()
    }

    /// Queues events and dead letters and waits until they are committed.
    /// Returns one outcome per event, in order.
    ///
    /// # Errors
    /// [`WriteError::QueueFull`] at once when the queue has no room,
    /// [`WriteError::Closed`] during shutdown, [`WriteError::Store`] when
    /// the database failed (nothing of the request was stored).
    pub async fn write(
        &self,
        events: Vec<Event>,
        dead: Vec<NewDeadLetter>,
    ) -> Result<Vec<WriteOutcome>, WriteError> {
        let n = events.len() + dead.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed);
        }
        let want = u32::try_from(n).map_err(|_| WriteError::QueueFull)?;
        let permit = Arc::clone(&self.inner.permits)
            .try_acquire_many_owned(want)
            .map_err(|_| WriteError::QueueFull)?;
        let (reply, rx) = oneshot::channel();
        // JSON encoding happens here, in the caller's task, so that the
        // single writer task only talks to the database.
        let job = Job {
            events: events.into_iter().map(EncodedEvent::new).collect(),
            dead,
            reply,
            _permit: permit,
        };
        self.inner
            .tx
            .send(Msg::Job(job))
            .map_err(|_| WriteError::Closed)?;
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Stops taking writes, commits everything queued, and waits for the
    /// task to end. Later writes get [`WriteError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let _ = self.inner.tx.send(Msg::Close);
        if let Some(task) = self.inner.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Sessions of stored events not yet written, and this writer's mark.
struct SessionFolder {
    writer: Uuid,
    pending: PendingSessions,
    /// How often pending sessions are written.
    interval: Duration,
    /// How often the mark is renewed when there is nothing to write.
    heartbeat: Duration,
    /// A mark not renewed for this long belongs to a dead writer.
    stale: Duration,
    /// When the sessions were last written (or the mark renewed).
    last: Option<Instant>,
}

/// Pending sessions beyond which they are written before the interval.
const MAX_PENDING_SESSIONS: usize = 20_000;

impl SessionFolder {
    fn new(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let heartbeat = (interval * 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        Self {
            writer: Uuid::new_v4(),
            pending: PendingSessions::default(),
            interval,
            heartbeat,
            stale: heartbeat * 3,
            last: None,
        }
    }

    /// Whether a write is due now.
    fn is_due(&self) -> bool {
        self.last.is_none() || Instant::now() >= self.due()
    }

    /// When the next write is due.
    fn due(&self) -> Instant {
        match self.last {
            None => Instant::now(),
            // Many pending: at once, but not in a tight loop while the
            // database refuses (a failed write also sets `last`).
            Some(last) if self.pending.len() >= MAX_PENDING_SESSIONS => {
                last + self.interval.min(Duration::from_millis(100))
            }
            Some(last) if self.pending.is_empty() => last + self.heartbeat,
            Some(last) => last + self.interval,
        }
    }

    /// Writes the pending sessions and renews the mark when due (always
    /// with `force`). On failure everything stays pending for next time.
    async fn flush(&mut self, store: &Store, force: bool) {
        if !force && !self.is_due() {
            return;
        }
        let now = now_ms();
        let stale_before = now - i64::try_from(self.stale.as_millis()).unwrap_or(i64::MAX);
        match store
            .writer_db()
            .flush_sessions(&self.pending, self.writer, now, stale_before)
            .await
        {
            Ok(recovered) => {
                if recovered > 0 {
                    info!(
                        writers = recovered,
                        "recomputed the sessions left unwritten by stopped writers"
                    );
                }
                self.pending.clear();
            }
            Err(err) => {
                warn!(error = %err, sessions = self.pending.len(), "writing sessions failed; will retry")
            }
        }
        // Also after a failure: retry at the next interval, not at once.
        self.last = Some(Instant::now());
    }

    /// The final write at shutdown, then the mark is removed.
    async fn finish(&mut self, store: &Store) {
        self.flush(store, true).await;
        if self.pending.is_empty()
            && let Err(err) = store.writer_db().drop_session_mark(self.writer).await
        {
            warn!(error = %err, "removing the writer's session mark failed");
        }
    }
}

async fn run(
    store: Store,
    config: WriterConfig,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    metrics: CoreMetrics,
) {
    let flush_events = config.flush_events.max(1);
    let mut sessions = SessionFolder::new(config.sessions_flush);
    let mut closing = false;
    while !closing {
        sessions.flush(&store, false).await;
        let first = match tokio::time::timeout_at(sessions.due().into(), rx.recv()).await {
            Err(_) => continue,
            Ok(Some(Msg::Job(job))) => job,
            Ok(Some(Msg::Close) | None) => break,
        };
        let mut size = first.size();
        let mut group = vec![first];
        let deadline = Instant::now() + config.flush_interval;
        while size < flush_events {
            let msg = match rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(msg) => msg,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                Some(Msg::Job(job)) => {
                    size += job.size();
                    group.push(job);
                }
                Some(Msg::Close) | None => {
                    closing = true;
                    break;
                }
            }
        }
        commit_group(&store, group, &metrics, &mut sessions.pending).await;
    }
    // Shutdown: commit whatever is still queued.
    let mut rest = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(job) = msg {
            rest.push(job);
        }
    }
    if !rest.is_empty() {
        commit_group(&store, rest, &metrics, &mut sessions.pending).await;
    }
    sessions.finish(&store).await;
}

/// Commits `events` and `dead` in one transaction, on the writer's own
/// connection.
async fn commit(
    store: &Store,
    events: &[&EncodedEvent],
    dead: &[NewDeadLetter],
) -> Result<Vec<InsertOutcome>, DbErr> {
    store.writer_db().commit(events, dead).await
}

fn is_connection_error(err: &DbErr) -> bool {
    matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_))
}

fn to_write_outcomes(outcomes: Vec<InsertOutcome>) -> Vec<WriteOutcome> {
    outcomes
        .into_iter()
        .map(|o| match o {
            InsertOutcome::Inserted => WriteOutcome::Inserted,
            InsertOutcome::Duplicate => WriteOutcome::Duplicate,
        })
        .collect()
}

/// Answers `job` with `result`, after folding its stored events into
/// `pending`.
fn reply(job: Job, result: Result<Vec<WriteOutcome>, WriteError>, pending: &mut PendingSessions) {
    if let Ok(outcomes) = &result {
        for (e, o) in job.events.iter().zip(outcomes) {
            if *o == WriteOutcome::Inserted {
                pending.add(&e.event);
            }
        }
    }
    let _ = job.reply.send(result);
}

async fn commit_group(
    store: &Store,
    group: Vec<Job>,
    metrics: &CoreMetrics,
    pending: &mut PendingSessions,
) {
    let events: Vec<&EncodedEvent> = group.iter().flat_map(|j| j.events.iter()).collect();
    let dead: Vec<NewDeadLetter> = group.iter().flat_map(|j| j.dead.iter().cloned()).collect();
    let started = Instant::now();
    let result = commit(store, &events, &dead).await;
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics
        .batch_size
        .observe((events.len() + dead.len()) as f64);
    match result {
        Ok(outcomes) => {
            let mut outcomes = to_write_outcomes(outcomes).into_iter();
            for job in group {
                let mine: Vec<WriteOutcome> = outcomes.by_ref().take(job.events.len()).collect();
                reply(job, Ok(mine), pending);
            }
        }
        Err(err) if is_connection_error(&err) => {
            error!(error = %err, "group commit failed: database unreachable");
            let err = Arc::new(err);
            for job in group {
                reply(job, Err(WriteError::Store(Arc::clone(&err))), pending);
            }
        }
        Err(err) => {
            metrics.commit_failures.inc();
            warn!(error = %err, jobs = group.len(), "group commit failed; retrying in parts");
            for job in group {
                let result = commit_alone(store, &job).await;
                reply(job, result, pending);
            }
        }
    }
}

/// Commits one request's events on their own, then event by event when
/// that fails too; an event that cannot be stored becomes a dead letter.
async fn commit_alone(store: &Store, job: &Job) -> Result<Vec<WriteOutcome>, WriteError> {
    let all: Vec<&EncodedEvent> = job.events.iter().collect();
    match commit(store, &all, &job.dead).await {
        Ok(outcomes) => return Ok(to_write_outcomes(outcomes)),
        Err(err) if is_connection_error(&err) => return Err(WriteError::Store(Arc::new(err))),
        Err(_) => {}
    }
    // Dead letters first, on their own.
    if let Err(err) = commit(store, &[], &job.dead).await {
        return Err(WriteError::Store(Arc::new(err)));
    }
    let mut outcomes = Vec::with_capacity(job.events.len());
    for encoded in &job.events {
        let event = &encoded.event;
        match commit(store, &[encoded], &[]).await {
            Ok(mut o) => outcomes.push(to_write_outcomes(std::mem::take(&mut o)).remove(0)),
            Err(err) => {
                let reason = err.to_string();
                warn!(event_id = %event.id, error = %reason, "event cannot be stored; dead-lettered");
                let letter = NewDeadLetter {
                    project_id: event.project_id,
                    event_id: Some(event.id),
                    payload: serde_json::to_value(event).unwrap_or(Value::Null),
                    plugin: "store".to_owned(),
                    error: reason.clone(),
                };
                commit(store, &[], std::slice::from_ref(&letter))
                    .await
                    .map_err(|e| WriteError::Store(Arc::new(e)))?;
                outcomes.push(WriteOutcome::DeadLettered(reason));
            }
        }
    }
    Ok(outcomes)
}
