//! Test plugin: keeps every event unchanged, written on the raw WIT
//! bindings (no SDK, no JSON parsing of properties): what the host itself
//! costs per event, for the benchmark.

// wit-bindgen's generated exports are `unsafe extern` functions.
#![allow(unsafe_code)]
// Generated bindings carry no docs.
#![allow(missing_docs)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

struct IdentityRaw;

impl Guest for IdentityRaw {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(events: Vec<Event>) -> Vec<Verdict> {
        events.into_iter().map(Verdict::Keep).collect()
    }
}

export!(IdentityRaw);
