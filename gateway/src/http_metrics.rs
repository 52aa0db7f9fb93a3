//! The HTTP layer's metrics: requests and latency by operation, and the
//! connection, protocol and body-read counters. Registered with the other
//! metrics at start; served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Label of the connection and body-error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// HTTP metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by route.
    pub latency: Family<RouteLabel, Histogram>,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections accepted (refused ones included).
    pub connections_accepted: Counter,
    /// Connections refused over a cap (`max_connections`,
    /// `max_connections_per_ip`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Connections closed by a timeout (`header_timeout`, `idle_timeout`,
    /// `write_timeout`).
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Requests refused before the API (`malformed_request`,
    /// `headers_too_large`, `uri_too_long`).
    pub protocol_errors: Family<ReasonLabel, Counter>,
    /// Failed body reads (`too_large`, `malformed`, `aborted`, `timeout`).
    pub body_errors: Family<ReasonLabel, Counter>,
    /// Requests refused by a rate limit, by class (`ingest`, `auth`, `api`).
    pub rate_limited: Family<ReasonLabel, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
            protocol_errors: Family::default(),
            body_errors: Family::default(),
            rate_limited: Family::default(),
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
        registry.register(
            "orrery_http_connections_open",
            "HTTP connections open now",
            self.connections_open.clone(),
        );
        registry.register(
            "orrery_http_connections_accepted",
            "HTTP connections accepted, refused ones included",
            self.connections_accepted.clone(),
        );
        registry.register(
            "orrery_http_connections_refused",
            "HTTP connections refused over a cap, by reason",
            self.connections_refused.clone(),
        );
        registry.register(
            "orrery_http_connections_closed",
            "HTTP connections closed by a timeout, by reason",
            self.connections_closed.clone(),
        );
        registry.register(
            "orrery_http_protocol_errors",
            "Requests refused before reaching the API, by reason",
            self.protocol_errors.clone(),
        );
        registry.register(
            "orrery_http_rate_limited",
            "Requests refused by a rate limit, by class (reason: ingest, auth, api)",
            self.rate_limited.clone(),
        );
        registry.register(
            "orrery_http_body_errors",
            "Request bodies that could not be read, by reason",
            self.body_errors.clone(),
        );
    }

    /// Counts one `reason` in `family`.
    pub fn count(family: &Family<ReasonLabel, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
