//! The documented request shapes of the compatibility endpoints
//! (`api/compat.rs`). They are for the OpenAPI document only: bodies are
//! read as JSON values and mapped by `crate::compat`, which keeps every
//! field these do not name in `properties`.

use std::collections::HashMap;

use poem_openapi::{Object, Union};
use serde_json::Value;

/// One PostHog event.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PosthogEvent {
    /// Event name; `$pageview` is stored as `pageview`.
    pub event: String,
    /// The user.
    pub distinct_id: Option<String>,
    /// Event id (UUID); a retry is stored once.
    pub uuid: Option<String>,
    /// RFC 3339 time, corrected by `sent_at` as PostHog does.
    pub timestamp: Option<String>,
    /// Properties; `$current_url`, `$referrer`, `$session_id`,
    /// `$raw_user_agent` and `token` are read, the rest kept.
    pub properties: Option<HashMap<String, Value>>,
    /// The project token, when the batch has none.
    pub api_key: Option<String>,
}

/// A PostHog batch.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PosthogBatch {
    /// The events.
    pub batch: Vec<PosthogEvent>,
    /// The project token: an Orrery ingest key or a token of
    /// `compat.posthog_tokens`.
    pub api_key: Option<String>,
    /// When the client sent the batch (RFC 3339), for clock-skew correction.
    pub sent_at: Option<String>,
}

/// A PostHog capture body.
#[derive(Debug, Union)]
#[oai(one_of)]
pub enum PosthogRequest {
    /// A batch.
    Batch(PosthogBatch),
    /// Several events.
    List(Vec<PosthogEvent>),
    /// One event.
    Single(PosthogEvent),
}

/// A PostHog form body (posthog-js's `sendBeacon`, `compression=base64`).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PosthogForm {
    /// The JSON body (one event, an array or a batch), base64-encoded, or
    /// as JSON text.
    pub data: String,
    /// `base64`; `lz64` is refused (415).
    pub compression: Option<String>,
}

/// One Plausible event (short names as the script sends them; `name`,
/// `url`, `domain`, `referrer` and `props` are taken too).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PlausibleInput {
    /// Event name; `pageview` is a page view.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub n: String,
    /// Page URL.
    #[oai(validator(min_length = 1))]
    pub u: String,
    /// The site's domain (several, comma-separated), as configured in
    /// `compat.plausible_domains`.
    #[oai(validator(min_length = 1))]
    pub d: String,
    /// Referrer.
    pub r: Option<String>,
    /// Custom properties: an object or its JSON text.
    pub p: Option<Value>,
    /// Screen width.
    pub w: Option<i64>,
    /// Hash-based routing (1).
    pub h: Option<i64>,
}

/// One Bilan event.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BilanEvent {
    /// Event type (`turn_completed`, `vote_cast`...).
    pub event_type: String,
    /// The user.
    pub user_id: Option<String>,
    /// Event id: a UUID becomes the event's id; other text is kept in
    /// `properties.event_id`.
    pub event_id: Option<String>,
    /// Milliseconds since the epoch, or RFC 3339.
    pub timestamp: Option<Value>,
    /// Kept in `properties.turn_id`.
    pub turn_id: Option<String>,
    /// Kept in `properties.conversation_id`.
    pub conversation_id: Option<String>,
    /// Properties.
    pub properties: Option<HashMap<String, Value>>,
}

/// `{"events": [...]}`.
#[derive(Debug, Object)]
pub struct BilanBatch {
    /// The events.
    pub events: Vec<BilanEvent>,
}

/// A Bilan events body.
#[derive(Debug, Union)]
#[oai(one_of)]
pub enum BilanRequest {
    /// Wrapped.
    Batch(BilanBatch),
    /// Several events.
    List(Vec<BilanEvent>),
    /// One event.
    Single(BilanEvent),
}

/// One event of seed 004's SDK.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProductEvent {
    /// Event name.
    pub event_name: String,
    /// The user.
    pub distinct_id: Option<String>,
    /// The session.
    pub session_id: Option<String>,
    /// Page URL.
    pub page_url: Option<String>,
    /// Referrer.
    pub referrer: Option<String>,
    /// RFC 3339 or milliseconds.
    pub timestamp: Option<Value>,
    /// Properties.
    pub properties: Option<HashMap<String, Value>>,
}

/// `{"events": [...]}`.
#[derive(Debug, Object)]
pub struct ProductBatch {
    /// The events.
    pub events: Vec<ProductEvent>,
}

/// A seed 004 ingest body.
#[derive(Debug, Union)]
#[oai(one_of)]
pub enum ProductRequest {
    /// Wrapped.
    Batch(ProductBatch),
    /// Several events.
    List(Vec<ProductEvent>),
    /// One event.
    Single(ProductEvent),
}
