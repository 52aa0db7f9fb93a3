//! The Bilan server's `POST /api/events` (seed 001): one event, an array,
//! or `{"events": [...]}`, with the key as `Authorization: Bearer`.
//!
//! | Bilan | Orrery |
//! |---|---|
//! | `event_type` (`eventType`) | `event` |
//! | `user_id` (`userId`) | `distinct_id` |
//! | `event_id` (`eventId`), when a UUID | `id` (otherwise kept in `properties`) |
//! | `session_id`, `timestamp` (ms or RFC 3339) | the same |
//! | `properties` | `properties` |
//! | `turn_id`, `conversation_id`, `prompt_text`, `ai_response`, any other field | `properties.<field>` |

use serde_json::{Map, Value};

use super::{Mapping, map_flat};

/// Bilan's names of the fields a rejection may name.
pub const FIELDS: Mapping = Mapping(&[
    ("event", "event_type"),
    ("distinct_id", "user_id"),
    ("id", "event_id"),
]);

/// One Bilan event as an Orrery client event.
pub fn to_native(mut event: Value) -> Value {
    // An id that is not a UUID (Bilan's own are free text) stays a
    // property, where the client can still find it.
    let mut kept = Vec::new();
    if let Value::Object(obj) = &mut event {
        for name in ["event_id", "eventId"] {
            if obj
                .get(name)
                .is_some_and(|v| v.as_str().is_none_or(|s| uuid::Uuid::parse_str(s).is_err()))
                && let Some(v) = obj.remove(name)
            {
                kept.push((name, v));
            }
        }
    }
    let mut mapped = map_flat(
        event,
        &[
            ("event_type", "event"),
            ("eventType", "event"),
            ("user_id", "distinct_id"),
            ("userId", "distinct_id"),
            ("event_id", "id"),
            ("eventId", "id"),
        ],
        &["session_id", "timestamp"],
    );
    if let Value::Object(obj) = &mut mapped {
        for (name, v) in kept {
            if let Value::Object(props) = obj
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                props.entry(name).or_insert(v);
            }
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_bilan_fields() {
        let v = to_native(json!({
            "event_type": "turn_completed", "user_id": "user-123", "turn_id": "turn-456",
            "conversation_id": "c1", "event_id": "evt-1", "properties": {"model": "gpt-4"}
        }));
        assert_eq!(
            v,
            json!({"event": "turn_completed", "distinct_id": "user-123",
                   "properties": {"model": "gpt-4", "turn_id": "turn-456",
                                  "conversation_id": "c1", "event_id": "evt-1"}})
        );
        let id = "0192b3a4-0000-7000-8000-000000000001";
        let v = to_native(json!({"eventType": "vote", "userId": "u", "eventId": id}));
        assert_eq!(v, json!({"event": "vote", "distinct_id": "u", "id": id}));
    }
}
