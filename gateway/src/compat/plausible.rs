//! Plausible's events API, `POST /api/event`, as its script, the
//! plausible-tracker package and server-side senders use it. The site
//! domain (`d`) names the project, through `compat.plausible_domains`.
//!
//! | Plausible | Orrery |
//! |---|---|
//! | `n` (`name`); `pageview` | `event`; `pageview` (a page view) |
//! | `u` (`url`) | `url` |
//! | `r` (`referrer`) | `referrer` |
//! | `d` (`domain`), comma-separated for several sites | the project(s); also `properties.domain` |
//! | `p` (`props`, `m`, `meta`): an object or its JSON text | `properties` |
//! | `w` | `properties.screen_width` |
//! | `h` (`hashMode`) | `properties.hash_mode` |
//! | `i` (`interactive`) | `properties.interactive` |
//! | `$` (`revenue`) | `properties.revenue` |
//! | any other field | `properties.<field>` |
//! | `User-Agent` header (required, as Plausible requires it) | the user agent |
//! | `X-Forwarded-For`: its first valid address (`compat.plausible_forwarded_for`) | the client IP (hashed, never stored) |

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{Mapping, Native};
use crate::error::{ApiError, ErrorCode};

/// Plausible's names of the fields a rejection may name.
pub const FIELDS: Mapping = Mapping(&[
    ("event", "n"),
    ("url", "u"),
    ("referrer", "r"),
    ("properties", "p"),
]);

/// A decoded Plausible event.
#[derive(Debug)]
pub struct PlausibleEvent {
    /// The site domains it is for (at least one).
    pub domains: Vec<String>,
    /// The event as an Orrery client event.
    pub event: Value,
}

/// Reads a Plausible event body.
///
/// # Errors
/// 400 naming the field: a body that is not a JSON object, a missing or
/// empty `d`/`domain`, `n`/`name` or `u`/`url`, or props that are neither
/// an object nor its JSON text.
pub fn decode(body: &[u8]) -> Result<PlausibleEvent, ApiError> {
    let bad = |msg: String| ApiError::bad_request(ErrorCode::InvalidEvent, msg);
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let mut take = |short: &str, long: &str| obj.remove(short).or_else(|| obj.remove(long));
    let domain = take("d", "domain");
    let name = take("n", "name");
    let url = take("u", "url");
    let referrer = take("r", "referrer");
    let props = take("p", "props");
    let meta = take("m", "meta");
    let domains: Vec<String> = match &domain {
        Some(Value::String(d)) => d
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    if domains.is_empty() {
        return Err(bad(
            "field `d` (domain) is required: the site's domain as configured in compat.plausible_domains".into(),
        ));
    }
    for (field, v) in [("n", &name), ("u", &url)] {
        if v.as_ref().and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(bad(format!(
                "field `{field}` is required and must be a non-empty string"
            )));
        }
    }
    let mut out = Native::default();
    for p in [props, meta] {
        let p = match p {
            Some(Value::String(text)) => {
                Some(serde_json::from_str::<Value>(&text).map_err(|_| {
                    bad("field `p` (props) must be an object or the JSON text of one".into())
                })?)
            }
            other => other,
        };
        if out.properties(p).is_err() {
            return Err(bad(
                "field `p` (props) must be an object or the JSON text of one".into(),
            ));
        }
    }
    out.set("event", name);
    out.set("url", url);
    out.set("referrer", referrer);
    if let Some(d) = domain {
        out.keep("domain", d);
    }
    let renames: Map<String, Value> = obj;
    for (k, v) in renames {
        if v.is_null() {
            continue;
        }
        let name = match k.as_str() {
            "w" => "screen_width",
            "h" | "hashMode" => "hash_mode",
            "i" | "interactive" => "interactive",
            "$" | "revenue" => "revenue",
            other => other,
        };
        out.keep(name, v);
    }
    Ok(PlausibleEvent {
        domains,
        event: out.build(None),
    })
}

/// The client IP as Plausible reads it: the first valid address of
/// `X-Forwarded-For`.
pub fn forwarded_ip<'a>(headers: impl Iterator<Item = &'a str>) -> Option<IpAddr> {
    headers
        .flat_map(|v| v.split(','))
        .find_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_the_tracker_payload() {
        let e = decode(
            br#"{"n":"pageview","u":"https://a.example/x#y","d":"A.example, b.example","r":null,"w":1280,"h":1,"p":"{\"plan\":\"pro\"}"}"#,
        )
        .unwrap();
        assert_eq!(e.domains, ["a.example", "b.example"]);
        assert_eq!(
            e.event,
            json!({"event": "pageview", "url": "https://a.example/x#y",
                   "properties": {"plan": "pro", "screen_width": 1280, "hash_mode": 1,
                                  "domain": "A.example, b.example"}})
        );
        let e = decode(br#"{"name":"Signup","url":"app://x","domain":"a.example","props":{"k":1},"revenue":{"amount":"1"}}"#).unwrap();
        assert_eq!(e.event["event"], "Signup");
        assert_eq!(e.event["properties"]["k"], 1);
        assert_eq!(e.event["properties"]["revenue"], json!({"amount": "1"}));
    }

    #[test]
    fn names_the_missing_field() {
        for (body, field) in [
            (r#"{"n":"pageview","u":"https://a.example"}"#, "`d`"),
            (r#"{"d":"a.example","u":"https://a.example"}"#, "`n`"),
            (r#"{"d":"a.example","n":"pageview"}"#, "`u`"),
            (
                r#"{"d":"a.example","n":"x","u":"https://a.example","p":"[1"}"#,
                "`p`",
            ),
            (
                r#"{"d":"a.example","n":"x","u":"https://a.example","p":[1]}"#,
                "`p`",
            ),
            (r#"[1]"#, "object"),
        ] {
            let e = decode(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEvent, "{body}");
            assert!(e.message.contains(field), "{body}: {}", e.message);
        }
    }

    #[test]
    fn forwarded_for_takes_the_first_valid_address() {
        let ip = forwarded_ip(["unknown, 203.0.113.7, 10.0.0.1"].into_iter());
        assert_eq!(ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(forwarded_ip(["garbage"].into_iter()), None);
    }
}
