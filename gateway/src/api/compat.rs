//! Drop-in ingestion for other systems' clients: PostHog's capture API
//! (`/capture`, `/batch`, `/e`, `/i/v0/e`, with `/flags` and `/decide`
//! answering no feature flags), Plausible's `POST /api/event`, the Bilan
//! server's `POST /api/events` and seed 004's `POST /api/v1/events/ingest`.
//!
//! Each is an adapter: its body is mapped (`crate::compat`) onto native
//! events, which go through the same validation, pipeline and commit as
//! `POST /api/v1/events`, and get the same per-event verdicts, with the
//! fields named as the client spelt them.

use std::sync::Arc;

use orrery_core::event::{RequestContext, now_ms};
use orrery_core::store::KeyKind;
use poem::Request;
use poem::http::header;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::registry::{MetaMediaType, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::compat_shapes::{
    BilanRequest, PlausibleInput, PosthogForm, PosthogRequest, ProductRequest,
};
use crate::api::ingest::{
    BodyShape, IngestResponse, RawBody, client_ip, ingest_key, ingest_values, rejected_single,
    request_context,
};
use crate::auth::BilanKey;
use crate::compat::{Mapping, bilan, plausible, posthog, product};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, app_state};

/// PostHog capture bodies.
pub struct PosthogShape;
impl BodyShape for PosthogShape {
    type Doc = PosthogRequest;
    const DESCRIPTION: &'static str = "One event, an array, or `{\"api_key\", \"batch\": [...], \
         \"sent_at\"}`: JSON, gzip (`Content-Encoding: gzip` or `?compression=gzip-js`), or a form \
         `data=<base64 of the JSON>` (posthog-js's sendBeacon).";

    fn register(registry: &mut Registry) {
        PosthogRequest::register(registry);
        PosthogForm::register(registry);
    }

    fn content() -> Vec<MetaMediaType> {
        Self::accepted()
            .iter()
            .map(|t| MetaMediaType {
                content_type: t,
                schema: if t.starts_with("application/x-www-form") {
                    PosthogForm::schema_ref()
                } else {
                    PosthogRequest::schema_ref()
                },
            })
            .collect()
    }

    fn accepted() -> &'static [&'static str] {
        &[
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
        ]
    }
}

/// Plausible's event body.
pub struct PlausibleShape;
impl BodyShape for PlausibleShape {
    type Doc = PlausibleInput;
    const DESCRIPTION: &'static str = "One event, as Plausible's script sends it (`text/plain` JSON) or its events API documents.";
}

/// Bilan's events body.
pub struct BilanShape;
impl BodyShape for BilanShape {
    type Doc = BilanRequest;
    const DESCRIPTION: &'static str = "One event, an array, or `{\"events\": [...]}`.";
}

/// Seed 004's ingest body.
pub struct ProductShape;
impl BodyShape for ProductShape {
    type Doc = ProductRequest;
    const DESCRIPTION: &'static str = "`{\"events\": [...]}`, an array, or one event.";
}

/// PostHog's answer to a capture: `status: 1`, with Orrery's verdicts.
#[derive(Debug, Object)]
pub struct PosthogCaptureResponse {
    /// Always 1, as PostHog answers.
    pub status: i32,
    #[oai(flatten)]
    #[allow(missing_docs)] // the flattened fields document themselves
    pub verdicts: IngestResponse,
}

/// What `/flags`, `/decide` and `/array/{token}/config` answer: no
/// feature flags, and the remote features that would load more code or
/// send other data (session recording, heatmaps, performance, site apps)
/// off, so that PostHog clients capture events, autocapture included.
/// Surveys are left out rather than `false`: posthog-js loads their
/// script for `false` (and stays quiet without the key).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PosthogConfig {
    /// Feature flags (`/flags` v2): none.
    pub flags: std::collections::BTreeMap<String, Value>,
    /// Feature flags (`/decide`): none.
    pub feature_flags: std::collections::BTreeMap<String, Value>,
    /// Their payloads: none.
    pub feature_flag_payloads: std::collections::BTreeMap<String, Value>,
    /// Always false.
    pub errors_while_computing_flags: bool,
    /// Always false: there are no flags to load.
    pub has_feature_flags: bool,
    /// The body compressions taken: gzip-js, base64.
    pub supported_compression: Vec<String>,
    /// Off.
    pub session_recording: bool,
    /// Off.
    pub heatmaps: bool,
    /// False: autocapture runs as the page configured it (posthog-js
    /// starts it only when the remote config says so).
    #[oai(rename = "autocapture_opt_out")]
    pub autocapture_opt_out: bool,
    /// Off.
    pub capture_performance: bool,
    /// None.
    pub site_apps: Vec<Value>,
    /// None.
    pub quota_limited: Vec<String>,
    /// This answer's id.
    pub request_id: Uuid,
}

impl PosthogConfig {
    fn off() -> Self {
        Self {
            flags: std::collections::BTreeMap::new(),
            feature_flags: std::collections::BTreeMap::new(),
            feature_flag_payloads: std::collections::BTreeMap::new(),
            errors_while_computing_flags: false,
            has_feature_flags: false,
            supported_compression: vec!["gzip-js".into(), "base64".into()],
            session_recording: false,
            heatmaps: false,
            autocapture_opt_out: false,
            capture_performance: false,
            site_apps: Vec::new(),
            quota_limited: Vec::new(),
            request_id: Uuid::now_v7(),
        }
    }
}

/// Bilan's answer: `success` and `count` (events stored or already
/// stored), with Orrery's verdicts.
#[derive(Debug, Object)]
pub struct BilanResponse {
    /// Whether no event was refused, dropped or dead-lettered.
    pub success: bool,
    /// Events stored now or before.
    pub count: u32,
    #[oai(flatten)]
    #[allow(missing_docs)] // the flattened fields document themselves
    pub verdicts: IngestResponse,
}

/// The remote config as a script.
#[derive(ApiResponse)]
pub enum ConfigScript {
    /// A script setting `window._POSTHOG_REMOTE_CONFIG[token]`.
    #[oai(status = 200, content_type = "text/javascript; charset=utf-8")]
    Script(PlainText<String>),
}

/// A redirect to PostHog's assets.
#[derive(ApiResponse)]
pub enum Redirect {
    /// To `compat.posthog_assets` + the path.
    #[oai(status = 302)]
    Found(#[oai(header = "Location")] String),
}

/// Accepted, after the commit.
#[derive(ApiResponse)]
pub enum Accepted {
    /// Committed; one verdict per event.
    #[oai(status = 202)]
    Accepted(Json<IngestResponse>),
}

/// Ingestion in other systems' formats.
pub struct CompatApi;

#[OpenApi(tag = "ApiTags::Compatibility")]
impl CompatApi {
    /// PostHog capture
    ///
    /// posthog-js and the PostHog libraries, pointed at Orrery. The token
    /// is an Orrery ingest key (`pk_...`) or a PostHog token listed in
    /// `compat.posthog_tokens`. A trailing slash is accepted, as on every
    /// PostHog path.
    #[oai(path = "/capture", method = "post", operation_id = "posthog_capture")]
    async fn capture(
        &self,
        req: &Request,
        /// `gzip-js` for a gzip body without `Content-Encoding`; `base64`.
        compression: Query<Option<String>>,
        body: RawBody<PosthogShape>,
    ) -> ApiResult<Json<PosthogCaptureResponse>> {
        posthog_capture(req, compression.0, body).await
    }

    /// PostHog batch
    ///
    /// The same as `/capture`; the PostHog libraries send batches here.
    #[oai(path = "/batch", method = "post", operation_id = "posthog_batch")]
    async fn batch(
        &self,
        req: &Request,
        /// `gzip-js` for a gzip body without `Content-Encoding`; `base64`.
        compression: Query<Option<String>>,
        body: RawBody<PosthogShape>,
    ) -> ApiResult<Json<PosthogCaptureResponse>> {
        posthog_capture(req, compression.0, body).await
    }

    /// PostHog capture (posthog-js)
    ///
    /// The same as `/capture`; posthog-js sends here.
    #[oai(path = "/e", method = "post", operation_id = "posthog_e")]
    async fn e(
        &self,
        req: &Request,
        /// `gzip-js` for a gzip body without `Content-Encoding`; `base64`.
        compression: Query<Option<String>>,
        body: RawBody<PosthogShape>,
    ) -> ApiResult<Json<PosthogCaptureResponse>> {
        posthog_capture(req, compression.0, body).await
    }

    /// PostHog capture (v0 path)
    ///
    /// The same as `/capture`; recent PostHog clients send here.
    #[oai(path = "/i/v0/e", method = "post", operation_id = "posthog_i_v0_e")]
    async fn i_v0_e(
        &self,
        req: &Request,
        /// `gzip-js` for a gzip body without `Content-Encoding`; `base64`.
        compression: Query<Option<String>>,
        body: RawBody<PosthogShape>,
    ) -> ApiResult<Json<PosthogCaptureResponse>> {
        posthog_capture(req, compression.0, body).await
    }

    /// PostHog feature flags
    ///
    /// No feature flags and no remote features, so PostHog clients stay
    /// quiet. The body is not read.
    #[oai(path = "/flags", method = "post", operation_id = "posthog_flags")]
    async fn flags(&self) -> Json<PosthogConfig> {
        Json(PosthogConfig::off())
    }

    /// PostHog decide
    ///
    /// The older name of `/flags`; the same answer.
    #[oai(path = "/decide", method = "post", operation_id = "posthog_decide")]
    async fn decide(&self) -> Json<PosthogConfig> {
        Json(PosthogConfig::off())
    }

    /// PostHog remote config
    ///
    /// What posthog-js loads at start: the same answer as `/flags`.
    #[oai(
        path = "/array/:token/config",
        method = "get",
        operation_id = "posthog_remote_config"
    )]
    async fn remote_config(
        &self,
        /// The project token (not checked: the answer is the same for all).
        token: Path<String>,
    ) -> Json<PosthogConfig> {
        let _ = token;
        Json(PosthogConfig::off())
    }

    /// PostHog remote config script
    ///
    /// The remote config as the script posthog-js loads first (it sets
    /// `window._POSTHOG_REMOTE_CONFIG[token]`); the same config as
    /// `/array/{token}/config`.
    #[oai(
        path = "/array/:token/config.js",
        method = "get",
        operation_id = "posthog_remote_config_script"
    )]
    async fn remote_config_script(
        &self,
        /// The project token, as the page gave it.
        token: Path<String>,
    ) -> ConfigScript {
        let config = PosthogConfig::off().to_json_string();
        // A JSON string is a valid JavaScript string literal.
        let token = Value::from(token.0).to_string();
        ConfigScript::Script(PlainText(format!(
            "(function(){{var c=window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{{}};\
             c[{token}]={{config:{config},siteApps:[]}};}})();"
        )))
    }

    /// PostHog static assets
    ///
    /// The PostHog snippet loads the library from `<api_host>/static/`
    /// (`array.js`): redirected to `compat.posthog_assets`, so that a
    /// snippet works with only its host changed. 404 when that setting is
    /// empty. Not in the document: a path of any depth has no OpenAPI form
    /// (README lists it).
    #[oai(
        path = "/static/*path",
        method = "get",
        operation_id = "posthog_static",
        hidden
    )]
    async fn posthog_static(&self, req: &Request) -> ApiResult<Redirect> {
        let base = app_state(req)
            .config
            .compat
            .posthog_assets
            .trim_end_matches('/');
        if base.is_empty() {
            return Err(ApiError::not_found(
                "PostHog asset (compat.posthog_assets is empty)",
            ));
        }
        // The path and query as sent (already valid in a URL).
        let rest = req
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .trim_start_matches("/static/");
        Ok(Redirect::Found(format!("{base}/static/{rest}")))
    }

    /// Plausible event
    ///
    /// Plausible's script, the plausible-tracker package and Plausible's
    /// events API, pointed at Orrery. The domain (`d`) names the project
    /// through `compat.plausible_domains`; several comma-separated domains
    /// store the event in each of their projects. `User-Agent` is required;
    /// the client IP is the first address of `X-Forwarded-For` when
    /// `compat.plausible_forwarded_for` (as Plausible documents).
    #[oai(path = "/api/event", method = "post", operation_id = "plausible_event")]
    async fn plausible(&self, req: &Request, body: RawBody<PlausibleShape>) -> ApiResult<Accepted> {
        let state = app_state(req).clone();
        let event = plausible::decode(&body.bytes)?;
        let Some(ua) = req
            .header(header::USER_AGENT)
            .filter(|ua| !ua.trim().is_empty())
        else {
            return Err(ApiError::bad_request(
                ErrorCode::BadRequest,
                "the User-Agent header is required (Plausible counts visitors with it)",
            ));
        };
        let ip = if state.config.compat.plausible_forwarded_for {
            plausible::forwarded_ip(
                req.headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
        } else {
            None
        };
        let ctx = Arc::new(RequestContext {
            ip: ip.or_else(|| client_ip(req, &state.config.http.trusted_proxies)),
            user_agent: Some(
                ua.chars()
                    .take(orrery_core::event::MAX_USER_AGENT_BYTES)
                    .collect(),
            ),
            server_side: false,
        });
        let mut projects = Vec::new();
        for domain in &event.domains {
            let project = plausible_project(&state, domain).await?;
            if !projects.contains(&project) {
                projects.push(project);
            }
        }
        let mut all: Option<IngestResponse> = None;
        for project in projects {
            let one = ingest_mapped(
                &state,
                project,
                Arc::clone(&ctx),
                vec![event.event.clone()],
                true,
                plausible::FIELDS,
            )
            .await?;
            all = Some(match all {
                None => one,
                Some(so_far) => merge(so_far, one),
            });
        }
        all.map(|r| Accepted::Accepted(Json(r))).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidEvent, "field `d` names no site")
        })
    }

    /// Bilan events
    ///
    /// The Bilan server's ingestion: one event, an array or
    /// `{"events": [...]}`, with the project key as `Authorization:
    /// Bearer` (or `X-API-Key`).
    #[oai(path = "/api/events", method = "post", operation_id = "bilan_events")]
    async fn bilan(
        &self,
        req: &Request,
        auth: BilanKey,
        body: RawBody<BilanShape>,
    ) -> ApiResult<Json<BilanResponse>> {
        let state = app_state(req).clone();
        let value = json(&body.bytes)?;
        let single = !matches!(&value, Value::Array(_)) && value.get("events").is_none();
        let Some(events) = crate::compat::events_of(value, "events") else {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBatch,
                "`events` must be an array of events",
            ));
        };
        let key = match auth.key() {
            Some(k) => ingest_key(&state, k).await?,
            None => {
                return Err(ApiError::unauthorized(
                    ErrorCode::MissingKey,
                    "send the project key as `Authorization: Bearer <key>` or in the X-API-Key header",
                ));
            }
        };
        let ctx = request_context(req, &state, key.kind == KeyKind::Secret);
        let events = events.into_iter().map(bilan::to_native).collect();
        let verdicts =
            ingest_mapped(&state, key.project_id, ctx, events, single, bilan::FIELDS).await?;
        Ok(Json(BilanResponse {
            success: verdicts.accepted + verdicts.duplicates == verdicts.results.len() as u32,
            count: verdicts.accepted + verdicts.duplicates,
            verdicts,
        }))
    }

    /// Seed 004 ingest
    ///
    /// The ingestion of the platform of seed 004: `{"events": [...]}` with
    /// `event_name`, `page_url` and the rest, the key in `X-API-Key`.
    #[oai(
        path = "/api/v1/events/ingest",
        method = "post",
        operation_id = "product_ingest"
    )]
    async fn product(
        &self,
        req: &Request,
        auth: crate::auth::IngestKey,
        body: RawBody<ProductShape>,
    ) -> ApiResult<Accepted> {
        let state = app_state(req).clone();
        let value = json(&body.bytes)?;
        let body_key = value
            .get("api_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let single = !matches!(&value, Value::Array(_)) && value.get("events").is_none();
        let Some(events) = crate::compat::events_of(value, "events") else {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBatch,
                "`events` must be an array of events",
            ));
        };
        let key = match auth.header().or(body_key.as_deref()) {
            Some(k) => ingest_key(&state, k).await?,
            None => {
                return Err(ApiError::unauthorized(
                    ErrorCode::MissingKey,
                    "send the project key in the X-API-Key header",
                ));
            }
        };
        let ctx = request_context(req, &state, key.kind == KeyKind::Secret);
        let events = events
            .into_iter()
            .map(|e| product::to_native(strip_key(e)))
            .collect();
        let verdicts =
            ingest_mapped(&state, key.project_id, ctx, events, single, product::FIELDS).await?;
        Ok(Accepted::Accepted(Json(verdicts)))
    }
}

/// The shared path of the four PostHog capture routes.
async fn posthog_capture(
    req: &Request,
    compression: Option<String>,
    body: RawBody<PosthogShape>,
) -> ApiResult<Json<PosthogCaptureResponse>> {
    let state = app_state(req).clone();
    let max = state.config.ingest.max_decompressed_bytes;
    let capture = posthog::decode(body.bytes, &body.mime, compression.as_deref(), max)?;
    let (project, server_side) = posthog_project(&state, capture.token.as_deref()).await?;
    let ctx = request_context(req, &state, server_side);
    let now = now_ms();
    let single = capture.single;
    let events = capture
        .events
        .into_iter()
        .map(|e| posthog::to_native(e, capture.sent_at, now))
        .collect();
    let verdicts = ingest_mapped(&state, project, ctx, events, single, posthog::FIELDS).await?;
    Ok(Json(PosthogCaptureResponse {
        status: 1,
        verdicts,
    }))
}

/// The project a PostHog token names: an Orrery ingest key, or a token of
/// `compat.posthog_tokens` (which only sends events, like a public key).
async fn posthog_project(state: &AppState, token: Option<&str>) -> ApiResult<(Uuid, bool)> {
    let Some(token) = token.map(str::trim) else {
        return Err(ApiError::unauthorized(
            ErrorCode::MissingKey,
            "send the project key as the PostHog token (`api_key`, `token` or `properties.token`)",
        ));
    };
    if let Some(&project) = state.config.compat.posthog_tokens.get(token) {
        configured(state, project).await?;
        return Ok((project, false));
    }
    if !(token.starts_with("pk_") || token.starts_with("sk_") || token.starts_with("xk_")) {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidKey,
            "unknown token: use an Orrery ingest key (pk_...) as the PostHog token, \
             or map the PostHog token to a project in compat.posthog_tokens",
        ));
    }
    let key = ingest_key(state, token).await?;
    Ok((key.project_id, key.kind == KeyKind::Secret))
}

/// The project of a Plausible domain (`www.` is ignored, as Plausible
/// does).
async fn plausible_project(state: &AppState, domain: &str) -> ApiResult<Uuid> {
    let domains = &state.config.compat.plausible_domains;
    let bare = domain.strip_prefix("www.").unwrap_or(domain);
    let project = domains
        .iter()
        .find(|(d, _)| {
            let d = d.trim().to_ascii_lowercase();
            d == domain || d.strip_prefix("www.").unwrap_or(&d) == bare
        })
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no project is configured for the domain {domain} (compat.plausible_domains)"
                ),
            )
        })?;
    configured(state, project).await?;
    Ok(project)
}

/// Checks that a project named in the `compat` settings exists.
async fn configured(state: &AppState, project: Uuid) -> ApiResult<()> {
    if state.compat_projects.exists(&state.store, project).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the compat settings name project {project}, which does not exist"),
        ))
    }
}

/// Ingests mapped events for `project`, under the batch limit, naming
/// rejected fields as the client spelt them; a single rejected event is a
/// 400 (as on the native endpoint).
async fn ingest_mapped(
    state: &AppState,
    project: Uuid,
    ctx: Arc<RequestContext>,
    events: Vec<Value>,
    single: bool,
    fields: Mapping,
) -> ApiResult<IngestResponse> {
    let max = state.config.ingest.max_batch_events;
    if events.len() > max {
        return Err(ApiError::too_large(format!(
            "batch has {} events, more than the limit of {max} (ingest.max_batch_events)",
            events.len()
        ))
        .with_code(ErrorCode::BatchTooLarge));
    }
    let mut response = ingest_values(state, project, ctx, events).await?;
    for r in &mut response.results {
        if let Some(f) = &r.field {
            r.field = Some(fields.foreign_field(f));
        }
    }
    if single {
        rejected_single(&response)?;
    }
    Ok(response)
}

/// Two projects' verdicts on one event, as one answer.
fn merge(mut a: IngestResponse, b: IngestResponse) -> IngestResponse {
    a.accepted += b.accepted;
    a.duplicates += b.duplicates;
    a.rejected += b.rejected;
    a.dropped += b.dropped;
    a.dead_lettered += b.dead_lettered;
    let n = a.results.len() as u32;
    a.results.extend(b.results.into_iter().map(|mut r| {
        r.index += n;
        r
    }));
    a
}

fn json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        )
    })
}

/// An event's own `api_key` is the credential, not data.
fn strip_key(mut e: Value) -> Value {
    if let Value::Object(obj) = &mut e {
        obj.remove("api_key");
    }
    e
}
