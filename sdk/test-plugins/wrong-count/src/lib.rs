//! Test plugin: when a batch holds an event named `short`, answers one
//! verdict fewer than the batch has events (the gateway must treat the whole
//! batch as failed); keeps every event of other batches.

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Keeps every event but forgets the last verdict.
pub struct WrongCount;

impl Plugin for WrongCount {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(WrongCount)
    }

    fn process(&self, _event: &mut Event) -> Verdict {
        Verdict::Keep
    }

    fn process_batch(&self, events: &mut [Event]) -> Vec<Verdict> {
        let short = events.iter().any(|e| e.name == "short");
        let mut verdicts: Vec<Verdict> = events.iter_mut().map(|e| self.process(e)).collect();
        if short {
            verdicts.pop();
        }
        verdicts
    }
}

orrery_plugin::export!(WrongCount);
