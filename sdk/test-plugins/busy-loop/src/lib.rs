//! Test plugin: never returns from `process` on an event named `loop` (for
//! the gateway's limits: fuel or the epoch deadline must stop it); keeps
//! every other event, so it passes the check an upload gets and misbehaves
//! only when a test asks.

use std::hint::black_box;

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Spins forever on `loop`.
pub struct BusyLoop;

impl Plugin for BusyLoop {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(BusyLoop)
    }

    fn process(&self, event: &mut Event) -> Verdict {
        if event.name != "loop" {
            return Verdict::Keep;
        }
        // `black_box` hides the counter from the optimizer: the loop stays.
        let mut spins = 0u64;
        loop {
            spins = black_box(spins.wrapping_add(1));
        }
    }
}

orrery_plugin::export!(BusyLoop);
