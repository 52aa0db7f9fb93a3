//! What the pipeline benchmarks share: stage lists by name and the median
//! µs per event of a pipeline over batches.

use std::hint::black_box;
use std::time::Instant;

use orrery_core::event::Envelope;
use orrery_core::pipeline::{Pipeline, StageSpec};

/// Median µs per event of `pipeline` over `batches`, after running the
/// first `warm` once to warm its caches.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    pipeline: &Pipeline,
    batches: Vec<Vec<Envelope>>,
    warm: usize,
) -> f64 {
    for b in batches.iter().take(warm) {
        black_box(rt.block_on(pipeline.run(b.clone())));
    }
    median(
        batches
            .into_iter()
            .map(|b| {
                let events = b.len().max(1) as f64;
                let started = Instant::now();
                black_box(rt.block_on(pipeline.run(b)));
                started.elapsed().as_secs_f64() * 1e6 / events
            })
            .collect(),
    )
}

/// Stages of the plugins `names`, each with its default config.
pub fn stages(names: &[&str]) -> Vec<StageSpec> {
    names
        .iter()
        .map(|p| StageSpec {
            plugin: (*p).to_owned(),
            config: serde_json::Map::new(),
            on_error: Default::default(),
            timeout_ms: None,
        })
        .collect()
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
