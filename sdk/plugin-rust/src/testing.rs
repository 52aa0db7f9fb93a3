//! Running a plugin natively, in `cargo test` (not on wasm32).
//!
//! Everything here goes through the same glue as the component: the config
//! is sent as JSON text, events are turned into the WIT records (properties
//! and enrichment as JSON text) and back, so a test sees what the gateway
//! would see.
//!
//! ```
//! use orrery_plugin::testing::{self, Outcome};
//! use orrery_plugin::{Event, Plugin, Value, Verdict};
//!
//! struct Tag;
//!
//! impl Plugin for Tag {
//!     fn configure(_config: Value) -> Result<Self, String> {
//!         Ok(Tag)
//!     }
//!     fn process(&self, event: &mut Event) -> Verdict {
//!         event.enrichment.insert("tagged".into(), true.into());
//!         Verdict::Keep
//!     }
//! }
//!
//! let plugin: Tag = testing::configure(serde_json::json!({})).unwrap();
//! let event = testing::process(&plugin, Event::new("pageview")).unwrap_keep();
//! assert_eq!(event.enrichment["tagged"], true);
//! ```

use serde_json::Value;

use crate::__private::bindings::Verdict as WireVerdict;
use crate::glue::{self, native};
pub use crate::log::Level;
use crate::{Event, Plugin};

/// What the gateway would get back for one event.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a test helper: easy matching beats size
pub enum Outcome {
    /// Kept, as the plugin changed it.
    Keep(Event),
    /// Dropped, with the reason.
    Drop(String),
    /// Failed, with the message.
    Fail(String),
}

impl Outcome {
    /// The kept event, if kept.
    pub fn kept(&self) -> Option<&Event> {
        match self {
            Outcome::Keep(event) => Some(event),
            _ => None,
        }
    }

    /// The kept event.
    ///
    /// # Panics
    ///
    /// If the event was dropped or failed (the panic shows which and why).
    #[track_caller]
    pub fn unwrap_keep(self) -> Event {
        match self {
            Outcome::Keep(event) => event,
            other => panic!("expected the event to be kept, got {other:?}"),
        }
    }

    /// The drop reason, if dropped.
    pub fn drop_reason(&self) -> Option<&str> {
        match self {
            Outcome::Drop(reason) => Some(reason),
            _ => None,
        }
    }

    /// The failure message, if failed.
    pub fn fail_reason(&self) -> Option<&str> {
        match self {
            Outcome::Fail(message) => Some(message),
            _ => None,
        }
    }
}

/// Configures a plugin from `config` (sent as JSON text, as the gateway
/// does).
pub fn configure<P: Plugin>(config: Value) -> Result<P, String> {
    glue::configure_text(&config.to_string())
}

/// Configures a plugin from raw config text (e.g. to test invalid JSON).
pub fn configure_str<P: Plugin>(config: &str) -> Result<P, String> {
    glue::configure_text(config)
}

/// Runs one event through `plugin`.
///
/// # Panics
///
/// If the plugin answers no verdict for the event.
#[track_caller]
pub fn process<P: Plugin>(plugin: &P, event: Event) -> Outcome {
    let mut outcomes = process_batch(plugin, vec![event]);
    assert_eq!(outcomes.len(), 1, "expected exactly one verdict");
    outcomes.remove(0)
}

/// Runs a batch through `plugin`: one outcome per verdict the plugin
/// answered (a plugin answering the wrong count shows here).
pub fn process_batch<P: Plugin>(plugin: &P, events: Vec<Event>) -> Vec<Outcome> {
    let wire = events
        .into_iter()
        .map(|event| glue::to_wire_event(event).unwrap_or_else(|err| panic!("{err}")))
        .collect();
    glue::process_wire(plugin, wire)
        .into_iter()
        .map(from_wire_verdict)
        .collect()
}

/// Runs one event whose `properties` and `enrichment` are given as raw text
/// (to test what happens when the host sends something that is not a JSON
/// object).
///
/// The plugin gets the event whatever the text; a map it accesses whose text
/// is not a JSON object makes the outcome [`Outcome::Fail`] naming the field.
/// A map it never accesses comes back as the same text
/// ([`JsonMap::original_text`](crate::JsonMap::original_text)), valid or
/// not.
///
/// # Panics
///
/// If the plugin answers no verdict for the event.
#[track_caller]
pub fn process_raw<P: Plugin>(
    plugin: &P,
    event: Event,
    properties: &str,
    enrichment: &str,
) -> Outcome {
    let mut wire = glue::to_wire_event(event).unwrap_or_else(|err| panic!("{err}"));
    wire.properties = properties.to_owned();
    wire.enrichment = enrichment.to_owned();
    let mut verdicts = glue::process_wire(plugin, vec![wire]);
    assert_eq!(verdicts.len(), 1, "expected exactly one verdict");
    from_wire_verdict(verdicts.remove(0))
}

/// The lines logged on this thread since the last call (at most
/// 10 000 are kept).
pub fn take_logs() -> Vec<(Level, String)> {
    native::LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
}

/// Fixes [`crate::now_ms`] on this thread (`None`: the system clock again).
pub fn set_now_ms(now_ms: Option<i64>) {
    native::NOW_MS.with(|now| now.set(now_ms));
}

fn from_wire_verdict(verdict: WireVerdict) -> Outcome {
    match verdict {
        WireVerdict::Keep(event) => Outcome::Keep(glue::from_wire(event)),
        WireVerdict::Drop(reason) => Outcome::Drop(reason),
        WireVerdict::Fail(message) => Outcome::Fail(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    struct Logger;

    impl Plugin for Logger {
        fn configure(_: Value) -> Result<Self, String> {
            Ok(Logger)
        }

        fn process(&self, event: &mut Event) -> Verdict {
            crate::log::info(format!("saw {}", event.name));
            event.enrichment.insert("at".into(), crate::now_ms().into());
            Verdict::Keep
        }
    }

    #[test]
    fn logs_and_clock_are_observable() {
        set_now_ms(Some(42));
        let plugin: Logger = configure(serde_json::json!({})).unwrap();
        let event = process(&plugin, Event::new("pageview")).unwrap_keep();
        assert_eq!(event.enrichment["at"], 42);
        assert_eq!(event.timestamp_ms, 42);
        assert_eq!(take_logs(), vec![(Level::Info, "saw pageview".to_owned())]);
        assert!(take_logs().is_empty());
        set_now_ms(None);
        assert!(crate::now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn raw_invalid_json_fails_once_accessed() {
        let plugin = Logger;
        let outcome = process_raw(&plugin, Event::new("x"), "{}", "nope");
        assert_eq!(
            outcome.fail_reason().unwrap(),
            "event enrichment is not valid JSON: expected ident at line 1 column 2"
        );
        assert_eq!(
            take_logs(),
            vec![(Level::Info, "saw x".to_owned())],
            "the plugin saw the event (with an empty enrichment)"
        );
    }

    struct Ignore;

    impl Plugin for Ignore {
        fn configure(_: Value) -> Result<Self, String> {
            Ok(Ignore)
        }

        fn process(&self, event: &mut Event) -> Verdict {
            event.name.push('!');
            Verdict::Keep
        }
    }

    #[test]
    fn raw_text_never_accessed_comes_back_as_it_came() {
        let properties = "{ \"b\":2 ,\"a\" : 1.0 }";
        let event = process_raw(&Ignore, Event::new("x"), properties, "[oops").unwrap_keep();
        assert_eq!(event.name, "x!");
        assert_eq!(event.properties.original_text(), Some(properties));
        assert_eq!(event.enrichment.original_text(), Some("[oops"));
        assert!(event.enrichment.try_as_map().is_err());
    }

    #[test]
    fn configure_str_refuses_bad_json() {
        assert!(configure_str::<Logger>("[").is_err());
    }
}
