//! The event model: what a client sends, what the pipeline sees, what the
//! store keeps.
//!
//! A client's JSON object is validated field by field into an [`Event`];
//! a bad field yields an [`EventRejection`] naming the field, so one bad
//! event in a batch never rejects its neighbours. The request context
//! (client IP, user agent) travels beside the event in an [`Envelope`] and
//! is never stored: the raw IP exists only there.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest event name, distinct id or session id, in characters.
pub const MAX_IDENT_CHARS: usize = 200;
/// Longest URL or referrer, in bytes.
pub const MAX_URL_BYTES: usize = 8192;
/// Longest user agent, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 1024;
/// How far in the future a client timestamp may lie (clock skew), in ms.
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;
/// Earliest accepted client timestamp: 2000-01-01T00:00:00Z, in ms.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;

/// An event as it goes through the pipeline and into the store. Its JSON
/// form (serde) is what a dead letter keeps and what replay reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per project; a client may choose it to make retries idempotent.
    pub id: Uuid,
    /// The project the ingest key belongs to.
    pub project_id: Uuid,
    /// Event name, e.g. `pageview` or `signup`.
    pub name: String,
    /// The user the event is about, as the client knows them.
    pub distinct_id: Option<String>,
    /// The session, from the SDK or the `session` plugin.
    pub session_id: Option<String>,
    /// When the event happened, per the client (defaults to `received_at`),
    /// in milliseconds since the Unix epoch, UTC.
    pub timestamp: i64,
    /// When the server received it, in milliseconds since the Unix epoch.
    pub received_at: i64,
    /// Page URL.
    pub url: Option<String>,
    /// Referrer URL.
    pub referrer: Option<String>,
    /// User agent (from the event, or else the request header).
    pub user_agent: Option<String>,
    /// Free-form JSON properties.
    pub properties: Map<String, Value>,
    /// Daily-rotating keyed hash of the client IP (`ip_hash` plugin).
    pub ip_hash: Option<String>,
    /// Cookieless visitor id: a daily-rotating hash of IP, user agent and
    /// project (`ip_hash` plugin).
    pub visitor_id: Option<String>,
    /// Fields added by enrichment plugins, by plugin-chosen key.
    pub enrichment: Map<String, Value>,
}

/// What the request knew about the sender. Never stored.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Client IP: the socket peer, or `X-Forwarded-For` from a trusted proxy.
    pub ip: Option<IpAddr>,
    /// The request's `User-Agent` header.
    pub user_agent: Option<String>,
    /// Whether the request was made with a secret (server-side) key.
    pub server_side: bool,
}

/// An event with the context of the request that carried it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The event, changed in place by plugins.
    pub event: Event,
    /// Shared by all events of one request.
    pub context: Arc<RequestContext>,
}

/// Builds events for tests and benchmarks, through the same validation as
/// ingestion (`parse_event`), so that a test event is one a client could
/// have sent: `EventBuilder::new("pageview").session("s1").at(t).event()`.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    fields: Map<String, Value>,
    project: Uuid,
    received_at: i64,
    context: RequestContext,
    visitor_id: Option<String>,
}

impl EventBuilder {
    /// An event named `name` of the nil project, received now.
    pub fn new(name: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from(name));
        Self {
            fields,
            project: Uuid::nil(),
            received_at: now_ms(),
            context: RequestContext::default(),
            visitor_id: None,
        }
    }

    /// Of `project`.
    pub fn project(mut self, project: Uuid) -> Self {
        self.project = project;
        self
    }

    /// A client field (`url`, `distinct_id`, `properties`...) as JSON.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// In session `id`.
    pub fn session(self, id: &str) -> Self {
        self.field("session_id", id)
    }

    /// Happened at `ms` (the client's timestamp).
    pub fn at(self, ms: i64) -> Self {
        self.field("timestamp", ms)
    }

    /// Received at `ms` (and, without `at`, happened then).
    pub fn received_at(mut self, ms: i64) -> Self {
        self.received_at = ms;
        self
    }

    /// Sent from `ip`.
    pub fn ip(mut self, ip: &str) -> Self {
        self.context.ip = Some(ip.parse().expect("a test IP address"));
        self
    }

    /// Sent with this `User-Agent` header.
    pub fn header_user_agent(mut self, ua: &str) -> Self {
        self.context.user_agent = Some(ua.into());
        self
    }

    /// Sent with a secret (server-side) key.
    pub fn server_side(mut self) -> Self {
        self.context.server_side = true;
        self
    }

    /// With the visitor id a plugin (`ip_hash`) would have set.
    pub fn visitor(mut self, id: &str) -> Self {
        self.visitor_id = Some(id.into());
        self
    }

    /// The event.
    ///
    /// # Panics
    /// When ingestion would refuse it: a test event must be a valid one.
    pub fn event(self) -> Event {
        let limits = EventLimits {
            max_event_bytes: 64 * 1024,
        };
        let mut event = parse_event(
            &Value::Object(self.fields),
            self.project,
            self.received_at,
            limits,
        )
        .unwrap_or_else(|r| panic!("a test event ingestion refuses: {} {}", r.field, r.reason));
        if self.visitor_id.is_some() {
            event.visitor_id = self.visitor_id;
        }
        event
    }

    /// The event with its request context, as the pipeline gets it.
    pub fn envelope(self) -> Envelope {
        let context = Arc::new(self.context.clone());
        Envelope {
            event: self.event(),
            context,
        }
    }
}

/// Why one event of a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRejection {
    /// The offending field (`event`, `timestamp`, `properties.x`...), or
    /// `$` for the event as a whole.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl EventRejection {
    /// A rejection naming `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Limits applied while validating events.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Largest JSON encoding of one event, in bytes.
    pub max_event_bytes: usize,
}

const KNOWN_FIELDS: &[&str] = &[
    "id",
    "event",
    "distinct_id",
    "session_id",
    "timestamp",
    "url",
    "referrer",
    "user_agent",
    "properties",
];

/// Validates one client event object into an [`Event`].
///
/// `received_at` is the server time in ms; it is also the timestamp when
/// the client sent none.
///
/// # Errors
/// An [`EventRejection`] naming the first bad field.
pub fn parse_event(
    value: &Value,
    project_id: Uuid,
    received_at: i64,
    limits: EventLimits,
) -> Result<Event, EventRejection> {
    let Value::Object(obj) = value else {
        return Err(EventRejection::new(
            "$",
            format!("an event must be a JSON object, not {}", json_type(value)),
        ));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !KNOWN_FIELDS.contains(&k.as_str()) && k.as_str() != "api_key")
    {
        return Err(EventRejection::new(
            unknown.clone(),
            "unknown field; custom data belongs in `properties`",
        ));
    }
    let size = json_size(value);
    if size > limits.max_event_bytes {
        return Err(EventRejection::new(
            "$",
            format!(
                "event is {size} bytes, more than the limit of {} bytes",
                limits.max_event_bytes
            ),
        ));
    }

    let name = match obj.get("event") {
        None | Some(Value::Null) => return Err(EventRejection::new("event", "is required")),
        Some(v @ Value::String(_)) => ident(v, "event")?.unwrap_or_default(),
        Some(v) => {
            return Err(EventRejection::new(
                "event",
                format!("must be a string, not {}", json_type(v)),
            ));
        }
    };
    if name.is_empty() {
        return Err(EventRejection::new("event", "must not be empty"));
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map_err(|_| EventRejection::new("id", "must be a UUID, e.g. 0192b3a4-...."))?,
        Some(v) => {
            return Err(EventRejection::new(
                "id",
                format!("must be a UUID string, not {}", json_type(v)),
            ));
        }
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => received_at,
        Some(v) => parse_timestamp(v, received_at)?,
    };
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if contains_nul(m) => {
            return Err(EventRejection::new(
                "properties",
                "contains a NUL character (\\u0000), which cannot be stored",
            ));
        }
        Some(Value::Object(m)) => m.clone(),
        Some(v) => {
            return Err(EventRejection::new(
                "properties",
                format!("must be a JSON object, not {}", json_type(v)),
            ));
        }
    };
    Ok(Event {
        id,
        project_id,
        name,
        distinct_id: obj
            .get("distinct_id")
            .map(|v| ident(v, "distinct_id"))
            .transpose()?
            .flatten(),
        session_id: obj
            .get("session_id")
            .map(|v| ident(v, "session_id"))
            .transpose()?
            .flatten(),
        timestamp,
        received_at,
        url: text(obj.get("url"), "url", MAX_URL_BYTES)?,
        referrer: text(obj.get("referrer"), "referrer", MAX_URL_BYTES)?,
        user_agent: text(obj.get("user_agent"), "user_agent", MAX_USER_AGENT_BYTES)?,
        properties,
        ip_hash: None,
        visitor_id: None,
        enrichment: Map::new(),
    })
}

/// Length of the compact JSON encoding, without building it.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Whether any key or string inside contains U+0000, which PostgreSQL
/// cannot store in text or JSON.
fn contains_nul(m: &Map<String, Value>) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    m.iter().any(|(k, v)| k.contains('\0') || walk(v))
}

/// How a JSON value's type is named in messages (`a boolean`).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short identifier; integers are accepted and kept exactly, as their
/// decimal text. Other numbers (fractions, integers beyond 64 bits, which
/// JSON parsers round) are refused rather than stored rounded, where two
/// users could end up with one id.
fn ident(v: &Value, field: &str) -> Result<Option<String>, EventRejection> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(_) => {
            return Err(EventRejection::new(
                field,
                "must be a string or an integer of at most 64 bits; \
                 send larger or fractional ids as strings so they are kept exactly",
            ));
        }
        other => {
            return Err(EventRejection::new(
                field,
                format!("must be a string, not {}", json_type(other)),
            ));
        }
    };
    if s.contains('\0') {
        return Err(EventRejection::new(field, "contains a NUL character"));
    }
    if s.chars().count() > MAX_IDENT_CHARS {
        return Err(EventRejection::new(
            field,
            format!("is longer than {MAX_IDENT_CHARS} characters"),
        ));
    }
    Ok(Some(s))
}

fn text(v: Option<&Value>, field: &str, max: usize) -> Result<Option<String>, EventRejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > max => Err(EventRejection::new(
            field,
            format!("is longer than {max} bytes"),
        )),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => {
            Err(EventRejection::new(field, "contains a NUL character"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(EventRejection::new(
            field,
            format!("must be a string, not {}", json_type(other)),
        )),
    }
}

fn parse_timestamp(v: &Value, received_at: i64) -> Result<i64, EventRejection> {
    let ms = match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc).timestamp_millis())
            .map_err(|_| {
                EventRejection::new(
                    "timestamp",
                    "must be RFC 3339 (2026-11-23T16:30:00Z) or milliseconds since the epoch",
                )
            })?,
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            EventRejection::new("timestamp", "must be an integer number of milliseconds")
        })?,
        other => {
            return Err(EventRejection::new(
                "timestamp",
                format!(
                    "must be an RFC 3339 string or milliseconds, not {}",
                    json_type(other)
                ),
            ));
        }
    };
    if ms < MIN_TIMESTAMP_MS {
        return Err(EventRejection::new(
            "timestamp",
            "is before 2000-01-01 (seconds instead of milliseconds?)",
        ));
    }
    if ms > received_at + MAX_FUTURE_SKEW_MS {
        return Err(EventRejection::new(
            "timestamp",
            "is more than 24 hours in the future",
        ));
    }
    Ok(ms)
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: EventLimits = EventLimits {
        max_event_bytes: 1024,
    };
    const NOW: i64 = 1_795_430_000_000;

    fn parse(v: Value) -> Result<Event, EventRejection> {
        parse_event(&v, Uuid::nil(), NOW, LIMITS)
    }

    #[test]
    fn minimal_event_gets_id_and_time() {
        let e = parse(json!({"event": "pageview"})).unwrap();
        assert_eq!(e.name, "pageview");
        assert_eq!(e.timestamp, NOW);
        assert_eq!(e.received_at, NOW);
        assert!(!e.id.is_nil());
    }

    #[test]
    fn integer_ids_are_kept_exactly_and_other_numbers_refused() {
        let big = parse(
            serde_json::from_str(r#"{"event": "e", "distinct_id": 9007199254740993}"#).unwrap(),
        );
        assert_eq!(
            big.unwrap().distinct_id.as_deref(),
            Some("9007199254740993")
        );
        let max = parse(
            serde_json::from_str(r#"{"event": "e", "session_id": 18446744073709551615}"#).unwrap(),
        );
        assert_eq!(
            max.unwrap().session_id.as_deref(),
            Some("18446744073709551615")
        );
        for body in [
            r#"{"event": "e", "distinct_id": 18446744073709551617}"#,
            r#"{"event": "e", "distinct_id": 1.5}"#,
            r#"{"event": "e", "distinct_id": 1e3}"#,
        ] {
            let err = parse(serde_json::from_str(body).unwrap()).unwrap_err();
            assert_eq!(err.field, "distinct_id", "{body}");
        }
        let err = parse(json!({"event": 5})).unwrap_err();
        assert_eq!(err.field, "event");
    }

    #[test]
    fn full_event_keeps_fields() {
        let id = Uuid::now_v7();
        let e = parse(json!({
            "id": id.to_string(), "event": "signup", "distinct_id": 42,
            "session_id": "s1", "timestamp": "2026-11-23T10:00:00Z",
            "url": "https://x.test/a", "referrer": "https://google.com/",
            "properties": {"plan": "pro"}
        }))
        .unwrap();
        assert_eq!(e.id, id);
        assert_eq!(e.distinct_id.as_deref(), Some("42"));
        assert_eq!(e.timestamp, 1_795_428_000_000);
        assert_eq!(e.properties["plan"], "pro");
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (json!({}), "event"),
            (json!({"event": ""}), "event"),
            (json!({"event": ["x"]}), "event"),
            (json!({"event": "a", "id": "nope"}), "id"),
            (json!({"event": "a", "timestamp": "yesterday"}), "timestamp"),
            (
                json!({"event": "a", "timestamp": 1_700_000_000}),
                "timestamp",
            ),
            (
                json!({"event": "a", "timestamp": NOW + 2 * MAX_FUTURE_SKEW_MS}),
                "timestamp",
            ),
            (json!({"event": "a", "properties": [1]}), "properties"),
            (json!({"event": "a", "url": 5}), "url"),
            (json!({"event": "a", "colour": "red"}), "colour"),
            (json!("pageview"), "$"),
            (
                json!({"event": "a", "properties": {"x": "y".repeat(2000)}}),
                "$",
            ),
        ];
        for (input, field) in cases {
            let err = parse(input.clone()).unwrap_err();
            assert_eq!(err.field, field, "input {input}: {err:?}");
            assert!(!err.reason.is_empty());
        }
    }
}
