//! Test plugin: refuses every config except `{"threshold": <number>}` (for
//! config validation at upload and stage setup); keeps every event.

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Needs a numeric `threshold` and nothing else.
pub struct BadConfig {
    /// The configured threshold (unused: only the config check matters).
    pub threshold: f64,
}

impl Plugin for BadConfig {
    fn configure(config: Value) -> Result<Self, String> {
        match config.as_object() {
            Some(fields) if fields.len() == 1 => {
                match fields.get("threshold").and_then(Value::as_f64) {
                    Some(threshold) => Ok(BadConfig { threshold }),
                    None => Err("`threshold` must be a number".to_owned()),
                }
            }
            _ => Err("`threshold` must be a number".to_owned()),
        }
    }

    fn process(&self, _event: &mut Event) -> Verdict {
        Verdict::Keep
    }
}

orrery_plugin::export!(BadConfig);
