//! Test plugin: panics on an event named `boom` (a trap: the gateway must
//! throw the instance away and use a fresh one), keeps every other event.

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Traps on `boom`.
pub struct Trap;

impl Plugin for Trap {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(Trap)
    }

    fn process(&self, event: &mut Event) -> Verdict {
        if event.name == "boom" {
            panic!("boom: this plugin traps on purpose");
        }
        Verdict::Keep
    }
}

orrery_plugin::export!(Trap);
