//! Other systems' ingestion formats, mapped onto Orrery's events, so that
//! their clients keep working when pointed at Orrery: PostHog's capture
//! API, Plausible's events API, the Bilan server's `POST /api/events` and
//! seed 004's `POST /api/v1/events/ingest`.
//!
//! Each mapping turns a foreign event into the JSON object a native client
//! would have sent (`POST /api/v1/events`), which then goes through the
//! same validation, pipeline and commit: a mapped event is stored exactly
//! as durably, and gets the same per-event verdict. Fields with no Orrery
//! meaning are kept in `properties` under their own names, never dropped;
//! the few that are consumed (keys, clock-skew hints, a raw IP) are listed
//! in the README's mapping tables. A rejected field is named as the
//! client spelt it ([`Mapping::foreign_field`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orrery_core::store::{Store, StoreError};
use serde_json::{Map, Value};
use uuid::Uuid;

pub mod bilan;
pub mod plausible;
pub mod posthog;
pub mod product;

/// Projects named by `compat.posthog_tokens` and
/// `compat.plausible_domains`, checked to exist before their events are
/// taken (a setting may name a project deleted since), and remembered for
/// a minute so that the check costs no query per request.
#[derive(Debug, Default)]
pub struct KnownProjects {
    seen: Mutex<HashMap<Uuid, Instant>>,
}

/// How long a project found stays known.
const KNOWN_FOR: Duration = Duration::from_secs(60);

impl KnownProjects {
    /// Whether `id` is a project.
    ///
    /// # Errors
    /// The database's, when it cannot answer.
    pub async fn exists(&self, store: &Store, id: Uuid) -> Result<bool, StoreError> {
        if self
            .lock()
            .get(&id)
            .is_some_and(|at| at.elapsed() < KNOWN_FOR)
        {
            return Ok(true);
        }
        match store.get_project(id).await {
            Ok(_) => {
                let mut seen = self.lock();
                // Only configured projects come here: the map stays small.
                seen.insert(id, Instant::now());
                Ok(true)
            }
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a mapping names Orrery's fields: pairs of (Orrery field, the
/// client's field), for messages about rejected events.
#[derive(Debug, Clone, Copy)]
pub struct Mapping(pub &'static [(&'static str, &'static str)]);

impl Mapping {
    /// The client's name of the field a rejection names (`event`,
    /// `properties.x`, `$`...).
    pub fn foreign_field(&self, native: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| *n == native)
            .map_or_else(|| native.to_owned(), |(_, f)| (*f).to_owned())
    }
}

/// A native event being built from a foreign one.
#[derive(Debug, Default)]
pub struct Native {
    fields: Map<String, Value>,
    properties: Map<String, Value>,
}

impl Native {
    /// Sets the native field `name` (one `parse_event` knows) unless
    /// `value` is absent or null.
    pub fn set(&mut self, name: &str, value: Option<Value>) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            self.fields.insert(name.to_owned(), v);
        }
    }

    /// Keeps `value` in `properties` under `name`, unless the properties
    /// already hold that name (the client's own properties win).
    pub fn keep(&mut self, name: &str, value: Value) {
        self.properties.entry(name.to_owned()).or_insert(value);
    }

    /// Keeps every non-null field of `rest` in `properties` (see
    /// [`Native::keep`]).
    pub fn keep_all(&mut self, rest: Map<String, Value>) {
        for (k, v) in rest {
            if !v.is_null() {
                self.keep(&k, v);
            }
        }
    }

    /// Takes the client's properties object (a non-object is left for
    /// validation to refuse, under the field `properties`).
    pub fn properties(&mut self, value: Option<Value>) -> Result<(), Value> {
        match value {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    self.properties.insert(k, v);
                }
                Ok(())
            }
            Some(other) => Err(other),
        }
    }

    /// Takes a field out of the properties (one the mapping gives an Orrery
    /// meaning).
    pub fn take_property(&mut self, name: &str) -> Option<Value> {
        self.properties.remove(name)
    }

    /// The event as a native client would send it.
    pub fn build(mut self, bad_properties: Option<Value>) -> Value {
        match bad_properties {
            Some(bad) => {
                self.fields.insert("properties".into(), bad);
            }
            None if !self.properties.is_empty() => {
                self.fields
                    .insert("properties".into(), Value::Object(self.properties));
            }
            None => {}
        }
        Value::Object(self.fields)
    }
}

/// The events of a body that is one event, an array of them, or an object
/// holding them under `list_key` (`{"events": [...]}`); `None` when
/// `list_key` holds something other than an array.
pub fn events_of(body: Value, list_key: &str) -> Option<Vec<Value>> {
    match body {
        Value::Array(items) => Some(items),
        Value::Object(mut obj) if obj.contains_key(list_key) => match obj.remove(list_key) {
            Some(Value::Array(items)) => Some(items),
            _ => None,
        },
        other => Some(vec![other]),
    }
}

/// The fields of a flat foreign event mapped onto native ones, the rest
/// kept in `properties`: `renames` pairs (foreign name, native field);
/// several foreign names may map to one native field (the first present
/// wins, the others are kept in `properties`). Native fields not renamed
/// (`properties`, `timestamp`...) pass when listed in `native`.
pub fn map_flat(event: Value, renames: &[(&str, &str)], native: &[&str]) -> Value {
    let Value::Object(mut obj) = event else {
        // Not an object: validation refuses it, naming `$`.
        return event;
    };
    let mut out = Native::default();
    let mut bad_properties = None;
    if let Err(bad) = out.properties(obj.remove("properties")) {
        bad_properties = Some(bad);
    }
    let passthrough = native.iter().map(|n| (*n, *n));
    for (foreign, name) in renames.iter().copied().chain(passthrough) {
        if out.fields.contains_key(name) {
            continue;
        }
        if let Some(v) = obj.remove(foreign).filter(|v| !v.is_null()) {
            out.fields.insert(name.to_owned(), v);
        }
    }
    out.keep_all(obj);
    out.build(bad_properties)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn flat_mapping_keeps_what_it_does_not_map() {
        let v = map_flat(
            json!({"event_type": "vote", "user_id": "u1", "turn_id": "t1",
                   "properties": {"model": "m"}, "timestamp": 1_800_000_000_000_i64,
                   "userId": "u2"}),
            &[
                ("event_type", "event"),
                ("user_id", "distinct_id"),
                ("userId", "distinct_id"),
            ],
            &["timestamp"],
        );
        assert_eq!(
            v,
            json!({"event": "vote", "distinct_id": "u1", "timestamp": 1_800_000_000_000_i64,
                   "properties": {"model": "m", "turn_id": "t1", "userId": "u2"}})
        );
    }

    #[test]
    fn client_properties_win_over_kept_fields() {
        let v = map_flat(
            json!({"event_type": "e", "turn_id": "top", "properties": {"turn_id": "inner"}}),
            &[("event_type", "event")],
            &[],
        );
        assert_eq!(v["properties"]["turn_id"], "inner");
    }

    #[test]
    fn bad_properties_are_left_for_validation() {
        let v = map_flat(
            json!({"event_type": "e", "properties": [1]}),
            &[("event_type", "event")],
            &[],
        );
        assert_eq!(v["properties"], json!([1]));
    }

    #[test]
    fn events_of_takes_the_three_shapes() {
        assert_eq!(events_of(json!([{"a": 1}, 2]), "events").unwrap().len(), 2);
        assert_eq!(
            events_of(json!({"events": [{}, {}, {}]}), "events")
                .unwrap()
                .len(),
            3
        );
        assert_eq!(events_of(json!({"a": 1}), "events").unwrap().len(), 1);
        assert!(events_of(json!({"events": 1}), "events").is_none());
    }
}
