//! Seed 004's `POST /api/v1/events/ingest`: `{"events": [...]}`, an array
//! or one event, with the key in `X-API-Key`.
//!
//! | seed 004 | Orrery |
//! |---|---|
//! | `event_name` (`event`) | `event` |
//! | `page_url` (`url`) | `url` |
//! | `distinct_id`, `session_id`, `referrer`, `user_agent`, `timestamp`, `id` | the same |
//! | `properties` | `properties` |
//! | any other field | `properties.<field>` |

use serde_json::Value;

use super::{Mapping, map_flat};

/// Seed 004's names of the fields a rejection may name.
pub const FIELDS: Mapping = Mapping(&[("event", "event_name"), ("url", "page_url")]);

/// One seed 004 event as an Orrery client event.
pub fn to_native(event: Value) -> Value {
    map_flat(
        event,
        &[
            ("event_name", "event"),
            ("event", "event"),
            ("page_url", "url"),
            ("url", "url"),
        ],
        &[
            "id",
            "distinct_id",
            "session_id",
            "referrer",
            "user_agent",
            "timestamp",
        ],
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_seed_004_fields() {
        let v = to_native(json!({
            "event_name": "page_view", "distinct_id": "d", "page_url": "https://a.example/x",
            "session_id": "s", "referrer": null, "properties": {"k": 1}, "screen": "1x1"
        }));
        assert_eq!(
            v,
            json!({"event": "page_view", "distinct_id": "d", "url": "https://a.example/x",
                   "session_id": "s", "properties": {"k": 1, "screen": "1x1"}})
        );
    }
}
