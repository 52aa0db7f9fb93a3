//! Ingestion as a service, without HTTP: events are validated, run through
//! their project's pipeline and committed by the writer, and each gets a
//! typed [`Outcome`]. The ingestion endpoints (`api/ingest.rs`) and the
//! dead-letter replay (`api/dead_letters.rs`) are adapters over it.

use std::sync::Arc;

use orrery_core::event::{
    Envelope, EventLimits, EventRejection, RequestContext, now_ms, parse_event,
};
use orrery_core::pipeline::Fate;
use orrery_core::store::NewDeadLetter;
use orrery_core::writer::{WriteError, WriteOutcome};
use serde_json::Value;
use uuid::Uuid;

use crate::state::AppState;

/// What became of one event.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stored.
    Accepted,
    /// Stored already (same project and id); not stored again.
    Duplicate,
    /// Invalid; never reached the pipeline.
    Rejected(EventRejection),
    /// Dropped on purpose by a plugin (e.g. a bot filter).
    Dropped {
        /// The plugin.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// Kept as a dead letter.
    DeadLettered(DeadLetterCause),
}

/// Who refused an event that became a dead letter.
#[derive(Debug, Clone)]
pub enum DeadLetterCause {
    /// A plugin failed on it under the `dead_letter` policy.
    Plugin {
        /// The plugin.
        plugin: String,
        /// Its error.
        error: String,
    },
    /// The database refused it (the rest of its request was stored). The
    /// database's message is in the dead letter and the logs, not here.
    Store,
}

/// An event's id (when it was valid) and its outcome.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The event id; `None` for a rejected event.
    pub id: Option<Uuid>,
    /// What became of it.
    pub outcome: Outcome,
}

/// Why nothing of a request was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The writer's queue is full.
    #[error("the write queue is full")]
    QueueFull,
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The database failed.
    #[error("the database failed: {0}")]
    Database(Arc<sea_orm::DbErr>),
}

impl From<WriteError> for IngestError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::QueueFull => Self::QueueFull,
            WriteError::Closed => Self::ShuttingDown,
            WriteError::Store(cause) => Self::Database(cause),
        }
    }
}

/// Validates `values` as events of `project` sent with `ctx`, enriches and
/// commits the valid ones; answers one verdict per value, in order, once
/// committed, and counts them in `orrery_events_total`.
///
/// # Errors
/// [`IngestError`] when nothing of the request was stored.
#[tracing::instrument(skip_all, fields(%project, events = values.len()))]
pub async fn ingest(
    state: &AppState,
    project: Uuid,
    ctx: Arc<RequestContext>,
    values: Vec<Value>,
) -> Result<Vec<Verdict>, IngestError> {
    let received_at = now_ms();
    let limits = EventLimits {
        max_event_bytes: state.config.ingest.max_event_bytes,
    };
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(values.len());
    let mut envelopes = Vec::with_capacity(values.len());
    let mut positions = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match parse_event(v, project, received_at, limits) {
            Ok(mut event) => {
                if event.user_agent.is_none() && !ctx.server_side {
                    event.user_agent = ctx.user_agent.clone();
                }
                envelopes.push(Envelope {
                    event,
                    context: Arc::clone(&ctx),
                });
                positions.push(i);
                verdicts.push(None);
            }
            Err(rejection) => verdicts.push(Some(Verdict {
                id: None,
                outcome: Outcome::Rejected(rejection),
            })),
        }
    }
    let processed = enrich_and_store(state, project, envelopes, true).await?;
    for (verdict, pos) in processed.into_iter().zip(positions) {
        verdicts[pos] = Some(verdict);
    }
    let verdicts: Vec<Verdict> = verdicts.into_iter().flatten().collect();
    count(state, &verdicts);
    Ok(verdicts)
}

/// Counts verdicts in `orrery_events_total{outcome}`.
fn count(state: &AppState, verdicts: &[Verdict]) {
    let mut n = [0u64; 5];
    for v in verdicts {
        n[match v.outcome {
            Outcome::Accepted => 0,
            Outcome::Duplicate => 1,
            Outcome::Rejected(_) => 2,
            Outcome::Dropped { .. } => 3,
            Outcome::DeadLettered(_) => 4,
        }] += 1;
    }
    let names = [
        "accepted",
        "duplicate",
        "rejected",
        "dropped",
        "dead_letter",
    ];
    for (name, n) in names.into_iter().zip(n) {
        state.core_metrics.count(name, n);
    }
}

/// Runs `envelopes` (events of `project`) through the project's current
/// pipeline and commits what it keeps; answers one verdict per envelope,
/// in order, once committed. Events the pipeline sends to dead letters are
/// written there when `write_dead_letters` (a replay keeps the original
/// dead letter instead).
///
/// # Errors
/// [`IngestError`] when nothing was stored.
#[tracing::instrument(skip_all, fields(%project, events = envelopes.len()))]
pub async fn enrich_and_store(
    state: &AppState,
    project: Uuid,
    envelopes: Vec<Envelope>,
    write_dead_letters: bool,
) -> Result<Vec<Verdict>, IngestError> {
    let pipeline = state.pipelines.for_project(&state.store, project).await;
    let fates = pipeline.run(envelopes).await;
    let mut out: Vec<Option<Verdict>> = Vec::with_capacity(fates.len());
    let mut to_store = Vec::with_capacity(fates.len());
    let mut store_positions = Vec::with_capacity(fates.len());
    let mut dead = Vec::new();
    for (pos, (env, fate)) in fates.into_iter().enumerate() {
        let id = Some(env.event.id);
        match fate {
            Fate::Store => {
                to_store.push(env.event);
                store_positions.push(pos);
                out.push(None);
            }
            Fate::Dropped { plugin, reason } => out.push(Some(Verdict {
                id,
                outcome: Outcome::Dropped { plugin, reason },
            })),
            Fate::DeadLetter { plugin, error } => {
                if write_dead_letters {
                    dead.push(NewDeadLetter {
                        project_id: env.event.project_id,
                        event_id: id,
                        payload: serde_json::to_value(&env.event).unwrap_or(Value::Null),
                        plugin: plugin.clone(),
                        error: error.clone(),
                    });
                }
                out.push(Some(Verdict {
                    id,
                    outcome: Outcome::DeadLettered(DeadLetterCause::Plugin { plugin, error }),
                }));
            }
        }
    }
    let ids: Vec<Uuid> = to_store.iter().map(|e| e.id).collect();
    // The live stream needs the events as stored only when someone here
    // follows the project; otherwise publishing is a map lookup.
    let live_copy = state.live.listening(project).then(|| to_store.clone());
    let outcomes = state.writer.write(to_store, dead).await?;
    if outcomes.contains(&WriteOutcome::Inserted) {
        state.stats_cache.invalidate(project);
        state
            .live
            .committed(&state.store, project, &outcomes, &ids, live_copy)
            .await;
    }
    for ((outcome, pos), id) in outcomes.into_iter().zip(store_positions).zip(ids) {
        let outcome = match outcome {
            WriteOutcome::Inserted => Outcome::Accepted,
            WriteOutcome::Duplicate => Outcome::Duplicate,
            // The writer logged the database's message and kept it in the
            // dead letter.
            WriteOutcome::DeadLettered(_) => Outcome::DeadLettered(DeadLetterCause::Store),
        };
        out[pos] = Some(Verdict {
            id: Some(id),
            outcome,
        });
    }
    Ok(out.into_iter().flatten().collect())
}
