//! Test plugin: logs 100 000 lines per event at info, then keeps the event
//! (for the gateway's log rate limit).

use orrery_plugin::{Event, Plugin, Value, Verdict, log};

/// Floods the log.
pub struct LogFlood;

/// Lines logged per event.
pub const LINES_PER_EVENT: u32 = 100_000;

impl Plugin for LogFlood {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(LogFlood)
    }

    fn process(&self, event: &mut Event) -> Verdict {
        for line in 0..LINES_PER_EVENT {
            log::info(format!("flood {line} for event {}", event.id));
        }
        Verdict::Keep
    }
}

orrery_plugin::export!(LogFlood);
