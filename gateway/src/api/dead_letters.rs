//! Dead letters: list them, replay them through the current pipeline.

use std::collections::HashMap;
use std::sync::Arc;

use orrery_core::event::{Envelope, Event, RequestContext};
use orrery_core::store::DeadLetterFilter;
use orrery_core::store::dead_letters::DeadLetter;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::ingest::ingest_error;
use crate::api::params::{Cursor, CursorKind, Limit, next_page, page_limit, rfc3339_ms};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ingest::{DeadLetterCause, Outcome, enrich_and_store};
use crate::state::app_state;

/// Most dead letters replayed by one call.
pub const MAX_REPLAY: u64 = 1000;

/// A dead letter.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeadLetterOut {
    /// Dead-letter id (for replay by id).
    pub id: Uuid,
    /// The event's id.
    pub event_id: Option<Uuid>,
    /// The plugin that failed, or `store` when the event could not be
    /// stored.
    pub plugin: String,
    /// The error.
    pub error: String,
    /// The event as it was when it failed (never with a raw IP).
    pub payload: HashMap<String, Value>,
    /// When it was written, RFC 3339.
    pub created_at: String,
    /// When it was replayed, if it was.
    pub replayed_at: Option<String>,
}

impl From<DeadLetter> for DeadLetterOut {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            plugin: d.plugin,
            error: d.error,
            payload: match d.payload {
                Value::Object(m) => m.into_iter().collect(),
                other => HashMap::from([("value".to_owned(), other)]),
            },
            created_at: rfc3339_ms(d.created_at),
            replayed_at: d.replayed_at.map(rfc3339_ms),
        }
    }
}

/// One page of dead letters.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeadLetterPage {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What to replay.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReplayIn {
    /// Only these dead letters; all open ones (oldest first, up to
    /// `limit`) when absent.
    pub ids: Option<Vec<Uuid>>,
    /// Most dead letters to replay, 1 to 1000 (default 1000).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub limit: Option<u64>,
}

/// What a replay did.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReplayOut {
    /// Dead letters taken up.
    pub replayed: u32,
    /// Events stored.
    pub accepted: u32,
    /// Events that were stored already (a replayed event is stored once).
    pub duplicates: u32,
    /// Events a plugin dropped.
    pub dropped: u32,
    /// Events that failed again. A plugin failure leaves the dead letter
    /// open; a store failure closes it and opens a new one with the new
    /// error.
    pub failed: u32,
    /// Dead letters whose payload is not an event (left open).
    pub unreadable: u32,
}

/// Dead letters.
pub struct DeadLettersApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::DeadLetters")]
impl DeadLettersApi {
    /// List dead letters
    ///
    /// Events a plugin failed on (under `on_error: dead_letter`) or that
    /// could not be stored, newest first. Replayed ones only with
    /// `include_replayed=true`.
    #[oai(
        path = "/projects/:project_id/dead-letters",
        method = "get",
        operation_id = "list_dead_letters"
    )]
    async fn list(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Also list dead letters already replayed.
        include_replayed: Query<Option<bool>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<Cursor>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<Limit>>,
    ) -> ApiResult<Json<DeadLetterPage>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0);
        let project = project_id.0;
        let before_seq = cursor
            .0
            .map(|c| state.cursors.open_seq(CursorKind::DeadLetters, project, &c))
            .transpose()?;
        state.store.get_project(project_id.0).await?;
        let filter = DeadLetterFilter {
            include_replayed: include_replayed.0.unwrap_or(false),
            ids: None,
            before_seq,
            oldest_first: false,
        };
        let mut rows = state
            .store
            .list_dead_letters(project_id.0, &filter, limit + 1)
            .await?;
        let next_cursor = next_page(&mut rows, limit, |d| d.seq).map(|seq| {
            state
                .cursors
                .seal_seq(CursorKind::DeadLetters, project, seq)
        });
        Ok(Json(DeadLetterPage {
            dead_letters: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// Replay dead letters
    ///
    /// Runs open dead letters (all, or those named) through the project's
    /// current pipeline and stores what it keeps. A replayed event is
    /// stored once, however often it is replayed. A dead letter is closed
    /// (`replayed_at`) when its event was stored, found stored already, or
    /// dropped; one that fails again stays open.
    #[oai(
        path = "/projects/:project_id/dead-letters/replay",
        method = "post",
        operation_id = "replay_dead_letters"
    )]
    async fn replay(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<ReplayIn>,
    ) -> ApiResult<Json<ReplayOut>> {
        let state = app_state(req);
        let project = project_id.0;
        auth.0.require_project(project)?;
        let limit = body.0.limit.unwrap_or(MAX_REPLAY);
        if !(1..=MAX_REPLAY).contains(&limit) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!("`limit` must be between 1 and {MAX_REPLAY}"),
            ));
        }
        state.store.get_project(project).await?;
        let filter = DeadLetterFilter {
            include_replayed: false,
            ids: body.0.ids,
            before_seq: None,
            oldest_first: true,
        };
        let letters = state
            .store
            .list_dead_letters(project, &filter, limit)
            .await?;
        let mut out = ReplayOut {
            replayed: 0,
            accepted: 0,
            duplicates: 0,
            dropped: 0,
            failed: 0,
            unreadable: 0,
        };
        // The request that carried the events is gone: no IP, no header.
        // Their hashes and earlier enrichments travel in the payload.
        let ctx = Arc::new(RequestContext::default());
        let mut ids = Vec::new();
        let mut envelopes = Vec::new();
        for d in letters {
            match serde_json::from_value::<Event>(d.payload) {
                Ok(event) if event.project_id == project => {
                    ids.push(d.id);
                    envelopes.push(Envelope {
                        event,
                        context: Arc::clone(&ctx),
                    });
                }
                _ => out.unreadable += 1,
            }
        }
        let verdicts = enrich_and_store(state, project, envelopes, false)
            .await
            .map_err(|e| ingest_error(state, e))?;
        let mut closed = Vec::new();
        for (v, id) in verdicts.into_iter().zip(ids) {
            match v.outcome {
                Outcome::Accepted => out.accepted += 1,
                Outcome::Duplicate => out.duplicates += 1,
                Outcome::Dropped { .. } => out.dropped += 1,
                // The store refused it again: the writer wrote a new dead
                // letter with the new error, this one is closed.
                Outcome::DeadLettered(DeadLetterCause::Store) => out.failed += 1,
                // A plugin failed again: this dead letter stays open.
                Outcome::DeadLettered(DeadLetterCause::Plugin { .. }) | Outcome::Rejected(_) => {
                    out.failed += 1;
                    continue;
                }
            }
            closed.push(id);
        }
        out.replayed = closed.len() as u32;
        state.store.mark_dead_letters_replayed(&closed).await?;
        Ok(Json(out))
    }
}
