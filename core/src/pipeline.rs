//! The pipeline: a project's ordered plugins, applied to a batch.
//!
//! Each plugin call is bounded by a time limit; a plugin that fails, times
//! out or returns a malformed answer has its `on_error` policy applied to
//! the events concerned, and the batch goes on.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::event::Envelope;
use crate::plugin::{OnError, Plugin, Verdict};

/// One configured plugin in a pipeline.
#[derive(Clone)]
pub struct Stage {
    /// The plugin instance.
    pub plugin: Arc<dyn Plugin>,
    /// What to do with an event the plugin fails on.
    pub on_error: OnError,
    /// Time limit for one batch.
    pub timeout: Duration,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("plugin", &self.plugin.name())
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Where an event ended after the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Enriched and to be stored.
    Store,
    /// Dropped by a plugin, with the plugin and reason.
    Dropped {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// To the dead-letter table, with the plugin and error.
    DeadLetter {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        error: String,
    },
}

/// An ordered list of stages.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    /// A pipeline of the given stages, in order.
    pub fn new(stages: Vec<Stage>) -> Self {
        Self { stages }
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Runs every stage over `batch` and returns each event with its fate,
    /// in the batch's order. Plugins change events in place. A plugin cut
    /// off by its time limit may have enriched some events partly; under
    /// `skip` they go on as they are.
    pub async fn run(&self, batch: Vec<Envelope>) -> Vec<(Envelope, Fate)> {
        let n = batch.len();
        let mut done: Vec<Option<(Envelope, Fate)>> = (0..n).map(|_| None).collect();
        // Live events and their original positions; plugins see only those.
        let mut positions: Vec<usize> = (0..n).collect();
        let mut work = batch;
        for stage in &self.stages {
            if work.is_empty() {
                break;
            }
            let name = stage.plugin.name();
            let outcome =
                tokio::time::timeout(stage.timeout, stage.plugin.process(&mut work)).await;
            let verdicts: Vec<Verdict> = match outcome {
                Ok(Ok(v)) if v.len() == work.len() => v,
                Ok(Ok(v)) => {
                    let reason = format!("returned {} verdicts for {} events", v.len(), work.len());
                    warn!(plugin = %name, %reason, "plugin misbehaved");
                    vec![Verdict::Fail(reason); work.len()]
                }
                Ok(Err(error)) => {
                    warn!(plugin = %name, %error, "plugin failed on a batch");
                    vec![Verdict::Fail(error.to_string()); work.len()]
                }
                Err(_) => {
                    let reason = format!("timed out after {} ms", stage.timeout.as_millis());
                    warn!(plugin = %name, %reason, "plugin cut off");
                    vec![Verdict::Fail(reason); work.len()]
                }
            };
            let mut next_work = Vec::with_capacity(work.len());
            let mut next_positions = Vec::with_capacity(work.len());
            for ((pos, verdict), env) in positions.into_iter().zip(verdicts).zip(work) {
                let fate = match verdict {
                    Verdict::Keep => None,
                    Verdict::Drop(reason) => Some(Fate::Dropped {
                        plugin: name.to_owned(),
                        reason,
                    }),
                    Verdict::Fail(error) => match stage.on_error {
                        OnError::Skip => None,
                        OnError::Drop => Some(Fate::Dropped {
                            plugin: name.to_owned(),
                            reason: error,
                        }),
                        OnError::DeadLetter => Some(Fate::DeadLetter {
                            plugin: name.to_owned(),
                            error,
                        }),
                    },
                };
                match fate {
                    None => {
                        next_work.push(env);
                        next_positions.push(pos);
                    }
                    Some(fate) => done[pos] = Some((env, fate)),
                }
            }
            work = next_work;
            positions = next_positions;
        }
        for (pos, env) in positions.into_iter().zip(work) {
            done[pos] = Some((env, Fate::Store));
        }
        done.into_iter().flatten().collect()
    }
}
