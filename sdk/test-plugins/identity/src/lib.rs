//! Test plugin: keeps every event unchanged. The benchmark baseline: what
//! calling a Rust plugin costs with nothing to do.

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Keeps every event.
pub struct Identity;

impl Plugin for Identity {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(Identity)
    }

    fn process(&self, _event: &mut Event) -> Verdict {
        Verdict::Keep
    }
}

orrery_plugin::export!(Identity);
