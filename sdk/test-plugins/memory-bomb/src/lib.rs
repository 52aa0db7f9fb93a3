//! Test plugin: on an event named `bomb`, allocates and touches memory until
//! it runs out (for the gateway's memory limit: the allocation failure must
//! trap the instance); keeps every other event.

use std::hint::black_box;

use orrery_plugin::{Event, Plugin, Value, Verdict};

/// Grabs 1 MiB after 1 MiB, writing every page, until allocation fails.
pub struct MemoryBomb;

const CHUNK: usize = 1 << 20;

impl Plugin for MemoryBomb {
    fn configure(_config: Value) -> Result<Self, String> {
        Ok(MemoryBomb)
    }

    fn process(&self, event: &mut Event) -> Verdict {
        if event.name != "bomb" {
            return Verdict::Keep;
        }
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            // Written, not just reserved: every page is really used.
            chunk.resize(CHUNK, 0xA5);
            hoard.push(black_box(chunk));
        }
    }
}

orrery_plugin::export!(MemoryBomb);
