//! The `Plugin` trait: one enrichment step of a project's pipeline.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::event::Envelope;

/// What a plugin decided for one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the event (the plugin may have changed it in place).
    Keep,
    /// Drop the event on purpose (a bot filter, say); counted, not an error.
    Drop(String),
    /// The plugin could not process this event; its `on_error` policy applies.
    Fail(String),
}

/// What happens to an event when a plugin fails on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Keep the event without this plugin's enrichment.
    #[default]
    Skip,
    /// Drop the event.
    Drop,
    /// Store the event's original payload in the dead-letter table.
    DeadLetter,
}

/// An error of a plugin: at construction (bad config) or for a whole batch.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin's configuration is invalid; `field` names the culprit.
    #[error("invalid config for plugin `{plugin}`, field `{field}`: {reason}")]
    Config {
        /// The plugin.
        plugin: String,
        /// The offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin failed on the whole batch.
    #[error("plugin `{plugin}` failed: {reason}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        reason: String,
    },
}

/// One enrichment step. Built from its config by the plugin registry,
/// then called with batches of events.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's registered name, e.g. `ip_hash`.
    fn name(&self) -> &str;

    /// Processes a batch in place and returns one verdict per event, in
    /// order. Events already dropped by an earlier plugin are not passed.
    ///
    /// # Errors
    /// A [`PluginError::Failed`] when the whole batch failed; the pipeline
    /// then applies the plugin's `on_error` policy to every event.
    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError>;
}
