//! Events between the pipeline and a WebAssembly plugin: the WIT `event`
//! record out, and a verdict's changed event checked and copied back.
//!
//! A plugin may change every field but `id`, `timestamp-ms` and
//! `received-at-ms`; what it answers is held to ingestion's own limits (a
//! name of 1 to 200 characters, URLs up to 8 KiB, JSON objects for
//! properties and enrichment) and anything else is a malformed answer.

use orrery_core::event::{Envelope, MAX_IDENT_CHARS, MAX_URL_BYTES, MAX_USER_AGENT_BYTES};
use orrery_core::plugin::Verdict;
use serde_json::{Map, Value};

use super::wasm::bindings::orrery::plugin::types as wit;

/// Largest properties or enrichment object a plugin may answer, as JSON.
pub const MAX_OBJECT_BYTES: usize = 256 * 1024;

/// The WIT record of an event.
pub(crate) fn to_wit(env: &Envelope) -> wit::Event {
    let e = &env.event;
    wit::Event {
        id: e.id.to_string(),
        name: e.name.clone(),
        distinct_id: e.distinct_id.clone(),
        session_id: e.session_id.clone(),
        timestamp_ms: e.timestamp,
        received_at_ms: e.received_at,
        url: e.url.clone(),
        referrer: e.referrer.clone(),
        user_agent: e.user_agent.clone(),
        visitor_id: e.visitor_id.clone(),
        properties: json_text(&e.properties),
        enrichment: json_text(&e.enrichment),
    }
}

/// A JSON object as text (serialised in place, not cloned first).
fn json_text(map: &Map<String, Value>) -> String {
    // A map of JSON values always serialises.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

/// Applies a plugin's verdict to the event it was `sent`: a kept event's
/// fields are checked and copied back.
///
/// # Errors
/// What is wrong with a kept event (a malformed answer); the event is
/// left as it was.
pub(crate) fn apply(
    env: &mut Envelope,
    sent: &wit::Event,
    verdict: wit::Verdict,
) -> Result<Verdict, String> {
    let got = match verdict {
        wit::Verdict::Keep(event) => event,
        wit::Verdict::Drop(reason) => return Ok(Verdict::Drop(clip(reason))),
        wit::Verdict::Fail(error) => return Ok(Verdict::Fail(clip(error))),
    };
    let chars = |field: &str, v: &str| {
        let n = v.chars().count();
        if (1..=MAX_IDENT_CHARS).contains(&n) {
            Ok(())
        } else {
            Err(format!(
                "`{field}` must be 1 to {MAX_IDENT_CHARS} characters"
            ))
        }
    };
    let bytes = |field: &str, v: &Option<String>, max: usize| match v {
        Some(s) if s.len() > max => Err(format!("`{field}` is over {max} bytes")),
        _ => Ok(()),
    };
    chars("name", &got.name)?;
    for (field, v) in [
        ("distinct-id", &got.distinct_id),
        ("session-id", &got.session_id),
        ("visitor-id", &got.visitor_id),
    ] {
        if let Some(v) = v {
            chars(field, v)?;
        }
    }
    bytes("url", &got.url, MAX_URL_BYTES)?;
    bytes("referrer", &got.referrer, MAX_URL_BYTES)?;
    bytes("user-agent", &got.user_agent, MAX_USER_AGENT_BYTES)?;
    // Unchanged JSON (the common case) is not parsed again.
    let properties = object("properties", &got.properties, &sent.properties)?;
    let enrichment = object("enrichment", &got.enrichment, &sent.enrichment)?;

    let e = &mut env.event;
    e.name = got.name;
    e.distinct_id = got.distinct_id;
    e.session_id = got.session_id;
    e.url = got.url;
    e.referrer = got.referrer;
    e.user_agent = got.user_agent;
    e.visitor_id = got.visitor_id;
    if let Some(p) = properties {
        e.properties = p;
    }
    if let Some(en) = enrichment {
        e.enrichment = en;
    }
    Ok(Verdict::Keep)
}

/// `None` when `text` is what was sent; else the object it holds.
fn object(field: &str, text: &str, sent: &str) -> Result<Option<Map<String, Value>>, String> {
    if text == sent {
        return Ok(None);
    }
    if text.len() > MAX_OBJECT_BYTES {
        return Err(format!("`{field}` is over {MAX_OBJECT_BYTES} bytes"));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(format!("`{field}` must be a JSON object")),
        Err(e) => Err(format!("`{field}` is not JSON: {e}")),
    }
}

/// A plugin's reason or error, cut to 1 KiB (it is logged and stored).
pub(crate) fn clip(mut text: String) -> String {
    const MAX: usize = 1024;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use orrery_core::event::EventBuilder;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_kept_event_changes_what_a_plugin_may_change() {
        let mut env = EventBuilder::new("pageview")
            .field("url", "https://shop.test/a?email=x@y.z")
            .field("properties", json!({"plan": "pro"}))
            .envelope();
        let (id, ts) = (env.event.id, env.event.timestamp);
        let sent = to_wit(&env);
        let mut changed = sent.clone();
        changed.url = Some("https://shop.test/a?email=[redacted]".into());
        changed.properties = r#"{"plan":"pro","tier":2}"#.into();
        changed.id = "not even a uuid".into();
        changed.timestamp_ms = 0;
        let v = apply(&mut env, &sent, wit::Verdict::Keep(changed)).unwrap();
        assert_eq!(v, Verdict::Keep);
        assert_eq!(
            env.event.url.as_deref(),
            Some("https://shop.test/a?email=[redacted]")
        );
        assert_eq!(env.event.properties["tier"], 2);
        assert_eq!(
            (env.event.id, env.event.timestamp),
            (id, ts),
            "not changeable"
        );
    }

    #[test]
    fn malformed_answers_are_refused_and_leave_the_event_alone() {
        let mut env = EventBuilder::new("pageview").envelope();
        let sent = to_wit(&env);
        type Change = Box<dyn Fn(&mut wit::Event)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|e| e.name = String::new()), "`name`"),
            (
                Box::new(|e| e.properties = "[1]".into()),
                "`properties` must be a JSON object",
            ),
            (
                Box::new(|e| e.enrichment = "{".into()),
                "`enrichment` is not JSON",
            ),
            (Box::new(|e| e.url = Some("x".repeat(9000))), "`url`"),
        ];
        for (change, expected) in cases {
            let mut bad = sent.clone();
            change(&mut bad);
            let err = apply(&mut env, &sent, wit::Verdict::Keep(bad)).unwrap_err();
            assert!(err.contains(expected), "{err}");
            assert_eq!(env.event.name, "pageview");
        }
    }

    #[test]
    fn drop_and_fail_reasons_are_kept_and_clipped() {
        let mut env = EventBuilder::new("pageview").envelope();
        let sent = to_wit(&env);
        let v = apply(&mut env, &sent, wit::Verdict::Drop("internal".into())).unwrap();
        assert_eq!(v, Verdict::Drop("internal".into()));
        let v = apply(&mut env, &sent, wit::Verdict::Fail("é".repeat(2000))).unwrap();
        let Verdict::Fail(text) = v else {
            panic!("fail expected")
        };
        assert!(text.len() <= 1024 + '…'.len_utf8());
    }
}
