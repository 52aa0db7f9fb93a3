//! Operations: liveness, readiness, details and Prometheus metrics.

use poem::Request;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::api::ApiTags;
use crate::state::{AppState, app_state as state};

/// Liveness.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct HealthOut {
    /// `ok`.
    pub status: String,
    /// Orrery version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// Readiness and details.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReadyOut {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Whether the database answered.
    pub database_ok: bool,
    /// Events waiting for the writer.
    pub queue_depth: u64,
    /// Capacity of the writer queue.
    pub queue_capacity: u64,
    /// Orrery version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// Answer of the readiness checks.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready.
    #[oai(status = 200)]
    Ready(Json<ReadyOut>),
    /// The database does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ReadyOut>),
}

async fn readiness(state: &AppState) -> ReadyResponse {
    let ok = state.store.ping().await.is_ok();
    let out = ReadyOut {
        status: if ok { "ok" } else { "unavailable" }.to_owned(),
        database: match state.store.backend() {
            sea_orm::DatabaseBackend::Postgres => "postgres",
            _ => "sqlite",
        }
        .to_owned(),
        database_ok: ok,
        queue_depth: state.writer.queue_depth() as u64,
        queue_capacity: state.config.ingest.queue_capacity as u64,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
    };
    if ok {
        ReadyResponse::Ready(Json(out))
    } else {
        ReadyResponse::Unavailable(Json(out))
    }
}

/// Operations endpoints (no prefix, no key).
pub struct OpsApi;

#[OpenApi(tag = "ApiTags::Ops")]
impl OpsApi {
    /// Liveness
    ///
    /// Answers while the process serves HTTP.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self, req: &Request) -> Json<HealthOut> {
        Json(HealthOut {
            status: "ok".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: state(req).started.elapsed().as_secs(),
        })
    }

    /// Readiness
    ///
    /// 200 when the database answers, 503 otherwise; with the writer's
    /// queue depth.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, req: &Request) -> ReadyResponse {
        readiness(state(req)).await
    }

    /// Database health
    ///
    /// The same check as `/health/ready`, under the name some monitors use.
    #[oai(path = "/health/db", method = "get", operation_id = "health_db")]
    async fn db(&self, req: &Request) -> ReadyResponse {
        readiness(state(req)).await
    }

    /// Prometheus metrics
    ///
    /// Requests and latency per route, events by outcome, writer queue
    /// depth, commit batch sizes and durations, in the Prometheus text
    /// format.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, req: &Request) -> PlainText<String> {
        let state = state(req);
        state
            .core_metrics
            .queue_depth
            .set(state.writer.queue_depth() as i64);
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &state.registry) {
            tracing::error!(%error, "metrics encoding failed");
        }
        PlainText(out)
    }
}
