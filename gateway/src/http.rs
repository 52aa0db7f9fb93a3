//! HTTP hygiene around every route: request ids, the JSON error format,
//! CORS, security headers, body limits, metrics and access logs.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use sha2::{Digest, Sha256};
use tracing::{Instrument, debug, info_span};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, normalize};
use crate::http_metrics::{HttpMetrics, ReasonLabel, RequestLabels, RouteLabel};
use crate::rate_limit::{self, Class, Verdict};
use crate::state::AppState;

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit: 413.
    TooLarge,
    /// Broken framing (chunked encoding, say): 400.
    Malformed,
    /// The client went away before the end: nobody is left to answer.
    Aborted,
    /// Not all there within `http.body_read_timeout_ms`: 408.
    Timeout,
}

impl BodyError {
    fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Aborted => "aborted",
            Self::Timeout => "timeout",
        }
    }

    /// The answer; `setting` names the limit for a 413.
    pub fn into_api_error(self, limit: usize, setting: &str) -> ApiError {
        match self {
            Self::TooLarge => ApiError::too_large(format!(
                "request body is larger than {limit} bytes ({setting})"
            )),
            Self::Malformed => ApiError::bad_request(
                ErrorCode::MalformedBody,
                "the request body is not validly framed (chunked encoding or length)",
            ),
            // Written to a closed connection: nobody reads it. The status
            // is nginx's "client closed request", for the request metrics.
            Self::Aborted => ApiError::new(
                ErrorCode::ClientAborted,
                "the client closed the connection before the body was complete",
            ),
            Self::Timeout => ApiError::new(
                ErrorCode::BodyTimeout,
                "the request body did not arrive in time (http.body_read_timeout_ms)",
            ),
        }
    }
}

/// Reads a whole request body of at most `limit` bytes within `timeout`,
/// telling the causes of failure apart (and counting them) so that the
/// metrics say what happened: a body over the limit (413), broken framing
/// (400), a client gone away, a body too slow (408).
///
/// # Errors
/// The [`BodyError`].
pub async fn read_body(
    body: poem::Body,
    limit: usize,
    timeout: std::time::Duration,
    metrics: &HttpMetrics,
) -> Result<bytes::Bytes, BodyError> {
    let read = async {
        let mut stream = std::pin::pin!(body.into_bytes_stream());
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| io_cause(&e))?;
            if data.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    };
    let result = match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::Timeout),
    };
    if let Err(e) = result {
        HttpMetrics::count(&metrics.body_errors, e.label());
    }
    result
}

/// The first key found twice in one object of a JSON document, as a path
/// (`$.stages[0].plugin`). serde_json keeps the last of duplicates, which a
/// proxy or another parser may read differently (`{"admin": false,
/// "admin": true}`), so API bodies with duplicates are refused. A document
/// that is not JSON answers `None`: the real parser names that error.
pub fn duplicate_key(body: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        found: &'a RefCell<Option<String>>,
        path: String,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            loop {
                let path = format!("{}[{i}]", self.path);
                let seed = Walk {
                    found: self.found,
                    path,
                };
                if seq.next_element_seed(seed)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = format!("{}.{key}", self.path);
                if !seen.insert(key) {
                    *self.found.borrow_mut() = Some(path);
                    return Err(A::Error::custom("duplicate key"));
                }
                map.next_value_seed(Walk {
                    found: self.found,
                    path,
                })?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Walk {
        found: &found,
        path: "$".to_owned(),
    }
    .deserialize(&mut de);
    found.into_inner()
}

/// Malformed framing when any error in the chain says invalid data (hyper's
/// decoder does, for a bad chunk size or line); else the client went away
/// (early end of file, reset connection or stream).
fn io_cause(err: &std::io::Error) -> BodyError {
    let invalid = |k: std::io::ErrorKind| {
        matches!(
            k,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
        )
    };
    if invalid(err.kind()) {
        return BodyError::Malformed;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && invalid(io.kind())
        {
            return BodyError::Malformed;
        }
        next = e.source();
    }
    BodyError::Aborted
}

/// Paths that browsers on any site may call (ingestion, the tracker).
fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path)
        || path.starts_with("/static/")
        || (path.starts_with("/array/")
            && (path.ends_with("/config") || path.ends_with("/config.js")))
}

/// The rate-limit class of a request, if any: the public ingestion paths
/// and the login paths per client IP, the rest of the API per credential.
fn rate_class(path: &str) -> Option<rate_limit::Class> {
    use rate_limit::Class;
    if matches!(
        path,
        "/api/v1/auth/login" | "/api/v1/auth/register" | "/api/v1/auth/refresh"
    ) {
        Some(Class::Auth)
    } else if is_public(path)
        && !matches!(path, "/sdk/tracker.js" | "/tracker.js")
        && !path.starts_with("/static/")
    {
        Some(Class::Ingest)
    } else if path.starts_with("/api/v1/") {
        Some(Class::Api)
    } else {
        None
    }
}

/// The paths any web page may call: those that take events (their bodies
/// are read under `ingest.*` limits by their handlers), the PostHog
/// helpers posthog-js calls from the page, and the tracker script. CORS
/// from every origin, and no `Cross-Origin-Resource-Policy` (a page on
/// another site loads the tracker).
const PUBLIC_PATHS: &[&str] = &[
    "/sdk/tracker.js",
    "/tracker.js",
    "/api/v1/events",
    "/t.gif",
    "/capture",
    "/batch",
    "/e",
    "/i/v0/e",
    "/flags",
    "/decide",
    "/api/event",
    "/api/events",
    "/api/v1/events/ingest",
];

/// PostHog clients add a trailing slash to every path (`/e/`, `/batch/`,
/// `/flags/`); the routes are declared without it.
fn posthog_slash(path: &str) -> Option<&str> {
    let bare = path.strip_suffix('/')?;
    let posthog = ["/capture", "/batch", "/e", "/i/v0/e", "/flags", "/decide"];
    (posthog.contains(&bare) || (bare.starts_with("/array/") && bare.ends_with("/config")))
        .then_some(bare)
}

/// The methods of each route, for the `Allow` header of a 405.
#[derive(Debug, Default)]
pub struct Routes {
    /// Path templates split in segments (`{x}` matches any one segment)
    /// with their methods.
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl Routes {
    /// The routes of an OpenAPI document, plus `extra` ones.
    pub fn from_spec(spec: &str, extra: &[(&str, &str)]) -> Self {
        let mut table: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        let mut add = |path: &str, method: &str| {
            let segments: Vec<String> = path.split('/').map(str::to_owned).collect();
            let method = method.to_ascii_uppercase();
            match table.iter_mut().find(|(s, _)| *s == segments) {
                Some((_, methods)) => methods.push(method),
                None => table.push((segments, vec![method])),
            }
        };
        if let Ok(spec) = serde_json::from_str::<serde_json::Value>(spec)
            && let Some(paths) = spec["paths"].as_object()
        {
            for (path, ops) in paths {
                for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
                    add(path, method);
                }
            }
        }
        for (path, method) in extra {
            add(path, method);
        }
        Self { routes: table }
    }

    /// The methods allowed on `path`, as an `Allow` header value.
    fn allow(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.routes
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .map(|(_, methods)| methods.join(", "))
    }
}

/// The middleware: wraps the whole application.
pub struct Hygiene<E> {
    inner: E,
    state: AppState,
    admin_origins: Arc<Vec<String>>,
    routes: Arc<Routes>,
}

impl<E> Hygiene<E> {
    /// Wraps `inner`, whose routes are `routes`.
    pub fn new(inner: E, state: AppState, routes: Routes) -> Self {
        let admin_origins = Arc::new(state.config.http.cors_origins.clone());
        Self {
            inner,
            state,
            admin_origins,
            routes: Arc::new(routes),
        }
    }

    /// Refusals before routing: a request target over `http.max_uri_bytes`
    /// (414), two `Host` headers (400: a proxy and Orrery could each
    /// believe a different one).
    fn check_head(&self, req: &Request) -> Result<(), ApiError> {
        let max_uri = self.state.config.http.max_uri_bytes;
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > max_uri {
            HttpMetrics::count(&self.state.http_metrics.protocol_errors, "uri_too_long");
            return Err(ApiError::new(
                ErrorCode::UriTooLong,
                format!("the request target is longer than {max_uri} bytes (http.max_uri_bytes)"),
            ));
        }
        if req.headers().get_all(header::HOST).iter().count() > 1 {
            HttpMetrics::count(&self.state.http_metrics.protocol_errors, "duplicate_host");
            return Err(ApiError::bad_request(
                ErrorCode::InvalidHeader,
                "the request has more than one Host header",
            ));
        }
        Ok(())
    }

    /// Takes a token of the request's bucket (none for preflights and
    /// paths without a limit), counting refusals.
    fn rate_limit(&self, req: &Request, path: &str, method: &Method) -> Option<Verdict> {
        if *method == Method::OPTIONS {
            return None;
        }
        let class = rate_class(path)?;
        let ip = || {
            crate::api::ingest::client_ip(req, &self.state.config.http.trusted_proxies)
                .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
        };
        let subject = match class {
            Class::Ingest | Class::Auth => ip(),
            Class::Api => {
                let credential = req
                    .headers()
                    .get("x-api-key")
                    .or_else(|| req.headers().get(header::AUTHORIZATION))
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| crate::accounts::cookie_value(req, crate::accounts::ACCESS_COOKIE));
                match credential {
                    // Kept as a digest: the map outlives the request.
                    Some(c) => hex::encode(&Sha256::digest(c.as_bytes())[..16]),
                    None => ip(),
                }
            }
        };
        let verdict = self.state.rate_limiter.take(class, &subject)?;
        if !verdict.allowed {
            self.state
                .http_metrics
                .rate_limited
                .get_or_create(&ReasonLabel {
                    reason: class.name().to_owned(),
                })
                .inc();
        }
        Some(verdict)
    }

    fn origin_allowed(&self, path: &str, origin: &str) -> bool {
        is_public(path)
            || self
                .admin_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

const ALLOW_HEADERS: &str =
    "content-type, content-encoding, authorization, x-api-key, x-request-id, x-csrf-token";
const EXPOSE_HEADERS: &str =
    "x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset";

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
        if let Some(bare) = posthog_slash(req.uri().path()) {
            let target = match req.uri().query() {
                Some(q) => format!("{bare}?{q}"),
                None => bare.to_owned(),
            };
            if let Ok(uri) = target.parse::<poem::http::Uri>() {
                *req.uri_mut() = uri;
            }
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Came over TLS: a trusted proxy says so.
        let https = req.remote_addr().as_socket_addr().is_some_and(|a| {
            self.state
                .config
                .http
                .trusted_proxies
                .contains(&a.ip().to_canonical())
        }) && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let limit_verdict = self.rate_limit(&req, &path, &method);
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
            if let Err(e) = self.check_head(&req) {
                return e.into_response();
            }
            if let Some(v) = limit_verdict
                && !v.allowed
            {
                let mut e = ApiError::new(
                    crate::error::ErrorCode::RateLimited,
                    "too many requests; `Retry-After` says when to retry",
                );
                e.retry_after = Some(v.retry_after_secs);
                return e.into_response();
            }
            // Body limit of everything but the public paths (ingestion reads
            // its own bodies under `ingest.*`).
            if !is_public(&path) && matches!(method, Method::POST | Method::PUT | Method::PATCH) {
                let limit = if path == "/api/v1/execute" || path.starts_with("/api/v1/wasm/") {
                    // Modules come inline (base64) or uploaded.
                    let module = self.state.config.execute.wasm_module_bytes as usize;
                    (module / 3 * 4 + 64 * 1024).max(self.state.config.http.max_body_bytes)
                } else if path == "/api/v1/plugins" || path.starts_with("/api/v1/plugins/") {
                    // Plugin code comes base64 in JSON.
                    let code = self.state.config.pipeline.plugin_max_bytes;
                    (code / 3 * 4 + 64 * 1024).max(self.state.config.http.max_body_bytes)
                } else {
                    self.state.config.http.max_body_bytes
                };
                let http = &self.state.config.http;
                let timeout = std::time::Duration::from_millis(http.body_read_timeout_ms);
                match read_body(req.take_body(), limit, timeout, &self.state.http_metrics).await {
                    Ok(bytes) => {
                        let json = req
                            .headers()
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.contains("json"));
                        if json && let Some(path) = duplicate_key(&bytes) {
                            return ApiError::bad_request(
                                ErrorCode::DuplicateKey,
                                format!("the body has the key `{path}` more than once"),
                            )
                            .into_response();
                        }
                        req.set_body(bytes)
                    }
                    Err(e) => {
                        return e
                            .into_api_error(limit, "http.max_body_bytes")
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
                    let mut resp = normalize(err);
                    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
                        && let Some(allow) = self.routes.allow(&path)
                        && let Ok(v) = HeaderValue::from_str(&allow)
                    {
                        resp.headers_mut().insert(header::ALLOW, v);
                    }
                    (route, resp)
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
        if let Some(v) = limit_verdict {
            for (name, value) in [
                ("ratelimit-limit", v.limit),
                ("ratelimit-remaining", v.remaining),
                ("ratelimit-reset", v.reset_secs),
            ] {
                headers.insert(name, HeaderValue::from(value));
            }
        }
        let hsts = self.state.config.http.hsts_max_age_secs;
        if https
            && hsts > 0
            && let Ok(v) = HeaderValue::from_str(&format!("max-age={hsts}; includeSubDomains"))
        {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
        if !is_public(&path) {
            headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
            headers.insert(
                "cross-origin-resource-policy",
                HeaderValue::from_static("same-origin"),
            );
            // The API answers data: nothing in it may run or load. The
            // docs page (Swagger UI, inline script and style) may run its
            // own code and call this origin only.
            headers.insert(
                "content-security-policy",
                HeaderValue::from_static(if path.starts_with("/docs") {
                    DOCS_CSP
                } else {
                    "default-src 'none'; frame-ancestors 'none'"
                }),
            );
        }
        Ok(resp)
    }
}

/// The Content-Security-Policy of `/docs`.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[cfg(test)]
mod tests {
    use super::duplicate_key;

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        let found = |s: &str| duplicate_key(s.as_bytes());
        assert_eq!(
            found(r#"{"admin": false, "admin": true}"#).as_deref(),
            Some("$.admin")
        );
        assert_eq!(
            found(r#"{"stages": [{"plugin": "a"}, {"plugin": "b", "plugin": "c"}]}"#).as_deref(),
            Some("$.stages[1].plugin")
        );
        // The same key in two objects, or escaped differently but equal.
        assert_eq!(found(r#"[{"a": 1}, {"a": 2}]"#), None);
        assert_eq!(found(r#"{"a": 1, "\u0061": 2}"#).as_deref(), Some("$.a"));
        assert_eq!(found(r#"{"a": {"b": 1}, "b": 2}"#), None);
        // Not JSON: left to the real parser.
        assert_eq!(found("{\"a\": "), None);
        assert_eq!(found("not json"), None);
    }
}
