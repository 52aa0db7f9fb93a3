//! Which events a live subscriber asked for: event names (any of them)
//! and property equalities (all of them). The same test serves the live
//! events and the replay, so both send the same events.

use orrery_core::event::Event;
use serde_json::Value;

/// `path=value`: the property at `path` equals `value`.
///
/// `path` names a key of the event's `properties`; dots go down into
/// nested objects (`plan.tier=gold` is `properties.plan.tier`). A string
/// property equals `value` when it is that text; a number, `true`,
/// `false` or `null` when its JSON text is `value` (`count=3`,
/// `beta=true`). Arrays and objects equal nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyEquals {
    path: Vec<String>,
    value: String,
}

impl PropertyEquals {
    /// Reads `path=value` (split at the first `=`).
    ///
    /// # Errors
    /// A message saying what is wrong: no `=`, an empty path or path part.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not `name=value`"))?;
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "`{text}`: the property name is empty (write `name=value` or `a.b=value`)"
            ));
        }
        Ok(Self {
            path,
            value: value.to_owned(),
        })
    }

    fn matches(&self, event: &Event) -> bool {
        let mut parts = self.path.iter();
        let Some(first) = parts.next() else {
            return false;
        };
        let mut at = event.properties.get(first);
        for part in parts {
            at = at.and_then(|v| v.get(part));
        }
        match at {
            Some(Value::String(s)) => *s == self.value,
            Some(Value::Number(n)) => self.value == n.to_string(),
            Some(Value::Bool(b)) => self.value == if *b { "true" } else { "false" },
            Some(Value::Null) => self.value == "null",
            _ => false,
        }
    }
}

/// A subscriber's filter; the default lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFilter {
    names: Vec<String>,
    properties: Vec<PropertyEquals>,
}

impl LiveFilter {
    /// Events named one of `names` (any name when empty) whose properties
    /// satisfy every one of `properties`.
    pub fn new(names: Vec<String>, properties: Vec<PropertyEquals>) -> Self {
        Self { names, properties }
    }

    /// The event names asked for (empty: all).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the filter looks at properties.
    pub fn has_properties(&self) -> bool {
        !self.properties.is_empty()
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        (self.names.is_empty() || self.names.contains(&event.name))
            && self.properties.iter().all(|p| p.matches(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, properties: Value) -> Event {
        serde_json::from_value(json!({
            "id": uuid::Uuid::new_v4(), "project_id": uuid::Uuid::nil(), "name": name,
            "distinct_id": null, "session_id": null, "timestamp": 0, "received_at": 0,
            "url": null, "referrer": null, "user_agent": null, "properties": properties,
            "ip_hash": null, "visitor_id": null, "enrichment": {}
        }))
        .expect("an event")
    }

    #[test]
    fn names_are_any_and_properties_all() {
        let f = LiveFilter::new(
            vec!["signup".into(), "buy".into()],
            vec![
                PropertyEquals::parse("plan=pro").expect("parses"),
                PropertyEquals::parse("seats=3").expect("parses"),
            ],
        );
        assert!(f.matches(&event("buy", json!({"plan": "pro", "seats": 3}))));
        assert!(!f.matches(&event("view", json!({"plan": "pro", "seats": 3}))));
        assert!(!f.matches(&event("buy", json!({"plan": "pro"}))));
        assert!(!f.matches(&event("buy", json!({"plan": "free", "seats": 3}))));
        assert!(LiveFilter::default().matches(&event("x", json!({}))));
    }

    #[test]
    fn paths_go_down_and_scalars_compare_as_json_text() {
        let e = event(
            "x",
            json!({"plan": {"tier": "gold"}, "beta": true, "v": "a=b", "n": null}),
        );
        for (text, want) in [
            ("plan.tier=gold", true),
            ("plan.tier=silver", false),
            ("plan=gold", false),
            ("beta=true", true),
            ("v=a=b", true),
            ("n=null", true),
            ("missing=", false),
        ] {
            let p = PropertyEquals::parse(text).expect("parses");
            assert_eq!(p.matches(&e), want, "{text}");
        }
    }

    #[test]
    fn malformed_equalities_are_refused() {
        for text in ["plan", "=pro", "a..b=1", ".a=1"] {
            assert!(PropertyEquals::parse(text).is_err(), "{text}");
        }
    }
}
