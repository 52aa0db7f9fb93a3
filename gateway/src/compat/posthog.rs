//! PostHog's capture API (`/capture`, `/batch`, `/e`, `/i/v0/e`), as
//! posthog-js and the PostHog libraries send it.
//!
//! Bodies: JSON (one event, an array, or `{"api_key", "batch": [...],
//! "sent_at"}`), gzip (`Content-Encoding: gzip`, or `?compression=gzip-js`
//! with a gzip body), or a form `data=<base64 JSON>` (posthog-js's
//! `sendBeacon` and `compression=base64`). LZ64 (very old posthog-js) is
//! refused with a 415 naming it.
//!
//! | PostHog | Orrery |
//! |---|---|
//! | `event`; `$pageview` | `event`; `pageview` (a page view) |
//! | `uuid` | `id` (a retry is stored once) |
//! | `distinct_id`, or `properties.distinct_id` | `distinct_id` |
//! | `timestamp`, corrected by `sent_at` or `offset` as PostHog does | `timestamp` |
//! | `properties.$current_url` | `url` |
//! | `properties.$referrer` (`$direct`: none) | `referrer` |
//! | `properties.$session_id` | `session_id` |
//! | `properties.$raw_user_agent` | `user_agent` |
//! | `properties.token`, `api_key`, `token` | the key (not stored) |
//! | `properties.$ip` | not stored: Orrery never stores a raw IP |
//! | other `properties`, and other top-level fields (`$set`, `$set_once`, `type`...) | `properties.<field>` |

use base64::Engine;
use chrono::DateTime;
use serde_json::Value;

use super::{Mapping, Native};
use crate::api::ingest::gunzip;
use crate::error::{ApiError, ErrorCode};

/// PostHog's names of the fields a rejection may name.
pub const FIELDS: Mapping = Mapping(&[
    ("id", "uuid"),
    ("url", "properties.$current_url"),
    ("referrer", "properties.$referrer"),
    ("session_id", "properties.$session_id"),
    ("user_agent", "properties.$raw_user_agent"),
]);

/// A decoded capture request.
#[derive(Debug)]
pub struct Capture {
    /// The project token or key, from the batch or its first event.
    pub token: Option<String>,
    /// The events, as sent.
    pub events: Vec<Value>,
    /// The batch's `sent_at` (ms), for clock-skew correction.
    pub sent_at: Option<i64>,
    /// Whether the body was one event (not an array or a batch): its
    /// rejection is then the request's 400, as on the native endpoint.
    pub single: bool,
}

/// Decodes a capture body: `mime` is its media type, `compression` the
/// `compression` query parameter; `max` bounds a gzip body once
/// decompressed.
///
/// # Errors
/// 400 for a body that is not JSON after decoding, bad base64 or gzip; 415
/// for LZ64.
pub fn decode(
    raw: Vec<u8>,
    mime: &str,
    compression: Option<&str>,
    max: usize,
) -> Result<Capture, ApiError> {
    let mut compression = compression.map(str::to_ascii_lowercase);
    let mut bytes = raw;
    let form = mime == "application/x-www-form-urlencoded"
        || (mime != "application/json" && bytes.starts_with(b"data="));
    if form {
        let mut data = None;
        for (k, v) in form_urlencoded::parse(&bytes) {
            match &*k {
                "data" => data = Some(v.into_owned()),
                "compression" => compression = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        let data = data.ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                "a form body must carry the events in its `data` field",
            )
        })?;
        bytes = decode_data(data, compression.as_deref())?;
    } else if compression.as_deref() == Some("lz64") {
        return Err(lz64());
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        bytes = gunzip(&bytes, max)?;
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    Ok(split(value))
}

fn lz64() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "compression lz64 is not accepted; send gzip-js, base64 or none \
         (posthog-js has not used lz64 since 2021)",
    )
}

/// The `data` form field: base64 of JSON, or JSON itself (older clients).
fn decode_data(data: String, compression: Option<&str>) -> Result<Vec<u8>, ApiError> {
    if compression == Some("lz64") {
        return Err(lz64());
    }
    let trimmed = data.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Ok(data.into_bytes());
    }
    // Form decoding turned any unescaped `+` into a space.
    let b64: String = trimmed
        .chars()
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(b64.as_bytes()).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("the `data` field is neither JSON nor base64 of JSON: {e}"),
        )
    })
}

/// Splits a decoded body into its token, events and `sent_at`.
fn split(value: Value) -> Capture {
    match value {
        Value::Object(mut obj) if obj.contains_key("batch") => {
            let token = take_str(&mut obj, "api_key").or_else(|| take_str(&mut obj, "token"));
            let sent_at = obj.get("sent_at").and_then(time_ms);
            let events = match obj.remove("batch") {
                Some(Value::Array(items)) => items,
                // Left for validation: one bad "event", named `$`.
                Some(other) => vec![other],
                None => Vec::new(),
            };
            let token = token.or_else(|| events.first().and_then(event_token));
            Capture {
                token,
                events,
                sent_at,
                single: false,
            }
        }
        Value::Array(events) => Capture {
            token: events.first().and_then(event_token),
            events,
            sent_at: None,
            single: false,
        },
        other => Capture {
            token: event_token(&other),
            events: vec![other],
            sent_at: None,
            single: true,
        },
    }
}

fn take_str(obj: &mut serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match obj.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The token an event carries: `api_key`, `token` or `properties.token`.
fn event_token(event: &Value) -> Option<String> {
    ["api_key", "token"]
        .iter()
        .find_map(|k| event.get(k))
        .or_else(|| event.get("properties").and_then(|p| p.get("token")))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An RFC 3339 time or a number of ms, in ms.
fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// One PostHog event as an Orrery client event; `now` is the time of
/// receipt (ms), `batch_sent_at` the batch's `sent_at`.
pub fn to_native(event: Value, batch_sent_at: Option<i64>, now: i64) -> Value {
    let Value::Object(mut obj) = event else {
        return event;
    };
    let mut out = Native::default();
    let bad_properties = out.properties(obj.remove("properties")).err();
    let name = obj.remove("event").map(|n| match n {
        Value::String(s) if s == "$pageview" => Value::from("pageview"),
        other => other,
    });
    out.set("event", name);
    out.set("id", obj.remove("uuid"));
    let distinct = obj
        .remove("distinct_id")
        .filter(|v| !v.is_null())
        .or_else(|| out.take_property("distinct_id"));
    out.set("distinct_id", distinct);
    // PostHog's clock-skew rule: a client's `timestamp` is moved by the
    // difference between its `sent_at` and our clock; `offset` is ms
    // before now.
    let sent_at = obj.remove("sent_at");
    let offset = obj.remove("offset");
    let sent_at = sent_at.as_ref().and_then(time_ms).or(batch_sent_at);
    let timestamp = match obj.remove("timestamp") {
        Some(ts) => match (time_ms(&ts), sent_at) {
            (Some(t), Some(sent)) => Some(Value::from(now + (t - sent))),
            _ => Some(ts),
        },
        None => offset
            .as_ref()
            .and_then(Value::as_i64)
            .map(|o| Value::from(now - o)),
    };
    out.set("timestamp", timestamp);
    let url = out.take_property("$current_url");
    out.set("url", url);
    let referrer = out
        .take_property("$referrer")
        .filter(|r| r.as_str() != Some("$direct"));
    out.set("referrer", referrer);
    let session = out.take_property("$session_id");
    out.set("session_id", session);
    let ua = out.take_property("$raw_user_agent");
    out.set("user_agent", ua);
    // The key is not data; a raw IP is never stored.
    out.take_property("token");
    out.take_property("$ip");
    for k in ["api_key", "token"] {
        obj.remove(k);
    }
    out.keep_all(obj);
    out.build(bad_properties)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn maps_a_posthog_js_page_view() {
        let v = to_native(
            json!({
                "event": "$pageview", "uuid": "0192b3a4-0000-7000-8000-000000000001",
                "timestamp": "2027-01-15T08:00:00.000Z",
                "properties": {
                    "token": "pk_x", "distinct_id": "d1", "$current_url": "https://a.example/p",
                    "$referrer": "$direct", "$session_id": "s1", "$lib": "web", "$ip": "1.2.3.4"
                },
                "$set": {"plan": "pro"}
            }),
            None,
            NOW,
        );
        assert_eq!(
            v,
            json!({
                "event": "pageview", "id": "0192b3a4-0000-7000-8000-000000000001",
                "distinct_id": "d1", "timestamp": "2027-01-15T08:00:00.000Z",
                "url": "https://a.example/p", "session_id": "s1",
                "properties": {"$lib": "web", "$set": {"plan": "pro"}}
            })
        );
    }

    #[test]
    fn corrects_clock_skew_like_posthog() {
        // The client's clock is 10 s ahead: sent_at - timestamp = 2 s.
        let sent = NOW + 10_000;
        let ts = chrono::DateTime::from_timestamp_millis(sent - 2_000)
            .unwrap()
            .to_rfc3339();
        let sent_at = chrono::DateTime::from_timestamp_millis(sent)
            .unwrap()
            .to_rfc3339();
        let v = to_native(json!({"event": "e", "timestamp": ts}), Some(sent), NOW);
        assert_eq!(v["timestamp"], NOW - 2_000);
        let v = to_native(
            json!({"event": "e", "timestamp": ts, "sent_at": sent_at}),
            None,
            NOW,
        );
        assert_eq!(v["timestamp"], NOW - 2_000);
        let v = to_native(json!({"event": "e", "offset": 500}), None, NOW);
        assert_eq!(v["timestamp"], NOW - 500);
        // A bad timestamp is left for validation to name.
        let v = to_native(json!({"event": "e", "timestamp": "soon"}), Some(sent), NOW);
        assert_eq!(v["timestamp"], "soon");
    }

    #[test]
    fn decodes_every_body_form() {
        let batch = json!({"api_key": "pk_a", "batch": [{"event": "x"}, {"event": "y"}],
                           "sent_at": "2027-01-15T08:00:00Z"});
        let text = batch.to_string();
        let c = decode(text.clone().into_bytes(), "application/json", None, 1 << 20).unwrap();
        assert_eq!(
            (c.token.as_deref(), c.events.len(), c.sent_at.is_some()),
            (Some("pk_a"), 2, true)
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let c = decode(gz, "text/plain", Some("gzip-js"), 1 << 20).unwrap();
        assert_eq!(c.events.len(), 2);

        let b64 = base64::engine::general_purpose::STANDARD.encode(
            json!([{"event": "z", "properties": {"token": "pk_b", "q": "a+b?"}}]).to_string(),
        );
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &b64)
            .append_pair("compression", "base64")
            .finish();
        let c = decode(
            form.into_bytes(),
            "application/x-www-form-urlencoded",
            None,
            1 << 20,
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("pk_b"));
        assert_eq!(c.events[0]["properties"]["q"], "a+b?");

        let e = decode(b"data=abc".to_vec(), "", Some("lz64"), 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
        let e = decode(b"{nope".to_vec(), "application/json", None, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        let e = decode(b"data=%%%".to_vec(), "", None, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidBody);
    }
}
