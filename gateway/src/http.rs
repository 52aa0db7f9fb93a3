//! HTTP hygiene around every route: request ids, the JSON error format,
//! CORS, security headers, body limits, metrics and access logs.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{Instrument, debug, info_span};
use uuid::Uuid;

use crate::error::{ApiError, normalize};
use crate::state::AppState;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Operation id, or `other` for routes outside the API.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

/// Label of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Operation id.
    pub route: String,
}

/// HTTP metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by route.
    pub latency: Family<RouteLabel, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
        }
    }
}

impl HttpMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orrery_http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "orrery_http_request_duration_seconds",
            "HTTP request latency by route",
            self.latency.clone(),
        );
    }
}

/// Paths that browsers on any site may call (ingestion).
fn is_ingestion(path: &str) -> bool {
    path == "/api/v1/events" || path == "/t.gif"
}

/// The middleware: wraps the whole application.
pub struct Hygiene<E> {
    inner: E,
    state: AppState,
    admin_origins: Arc<Vec<String>>,
}

impl<E> Hygiene<E> {
    /// Wraps `inner`.
    pub fn new(inner: E, state: AppState) -> Self {
        let admin_origins = Arc::new(state.config.http.cors_origins.clone());
        Self {
            inner,
            state,
            admin_origins,
        }
    }

    fn origin_allowed(&self, path: &str, origin: &str) -> bool {
        is_ingestion(path)
            || self
                .admin_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

const ALLOW_HEADERS: &str = "content-type, content-encoding, x-api-key, x-request-id";
const EXPOSE_HEADERS: &str = "x-request-id, retry-after";

impl<E: Endpoint> Endpoint for Hygiene<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.is_ascii())
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = info_span!("request", id = %request_id, %method, %path);

        let mut resp = async {
            // CORS preflight.
            if method == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            {
                return match &origin {
                    Some(o) if self.origin_allowed(&path, o) => Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .header(
                            header::ACCESS_CONTROL_ALLOW_METHODS,
                            "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                        )
                        .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS)
                        .header(header::ACCESS_CONTROL_MAX_AGE, "600")
                        .finish(),
                    _ => ApiError::forbidden("this origin is not allowed (http.cors_origins)")
                        .into_response(),
                };
            }
            // Body limit of everything but ingestion (which has its own).
            if !is_ingestion(&path) && matches!(method, Method::POST | Method::PUT | Method::PATCH)
            {
                let limit = if path == "/api/v1/execute" || path.starts_with("/api/v1/wasm/") {
                    // Modules come inline (base64) or uploaded.
                    let module = self.state.config.execute.wasm_module_bytes as usize;
                    (module / 3 * 4 + 64 * 1024).max(self.state.config.http.max_body_bytes)
                } else {
                    self.state.config.http.max_body_bytes
                };
                match req.take_body().into_bytes_limit(limit).await {
                    Ok(bytes) => req.set_body(bytes),
                    Err(_) => {
                        return ApiError::too_large(format!(
                            "request body is larger than {limit} bytes (http.max_body_bytes)"
                        ))
                        .into_response();
                    }
                }
            }
            let (route, resp) = match self.inner.call(req).await {
                Ok(out) => {
                    let resp = out.into_response();
                    let route = resp.data::<OperationId>().map(|o| o.0);
                    (route, resp)
                }
                Err(err) => {
                    let route = err.data::<OperationId>().map(|o| o.0);
                    (route, normalize(err))
                }
            };
            let route = route.unwrap_or(if resp.status() == StatusCode::NOT_FOUND {
                "unmatched"
            } else {
                "other"
            });
            let status = resp.status().as_u16();
            let elapsed = started.elapsed();
            let metrics = &self.state.http_metrics;
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    method: method.to_string(),
                    status,
                })
                .inc();
            metrics
                .latency
                .get_or_create(&RouteLabel {
                    route: route.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
            debug!(
                status,
                route,
                elapsed_us = elapsed.as_micros() as u64,
                "request"
            );
            // A 503 is back-pressure (queue full, busy), counted by the
            // metrics above; logging each one would flood the log exactly
            // when the server is overloaded.
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                debug!(status, route, "request refused: overloaded");
            } else if resp.status().is_server_error() {
                tracing::warn!(status, route, "request failed");
            }
            resp
        }
        .instrument(span)
        .await;

        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert("x-request-id", v);
        }
        if let Some(o) = &origin
            && self.origin_allowed(&path, o)
            && let Ok(v) = HeaderValue::from_str(o)
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        headers.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(), microphone=(), geolocation=(), interest-cohort=()",
            ),
        );
        if !is_ingestion(&path) {
            headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
            headers.insert(
                "cross-origin-resource-policy",
                HeaderValue::from_static("same-origin"),
            );
            if !path.starts_with("/docs") {
                headers.insert(
                    "content-security-policy",
                    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
                );
            }
        }
        Ok(resp)
    }
}
