//! Prometheus metrics of the core: the writer and the ingestion outcomes.
//!
//! The gateway owns the registry; [`CoreMetrics::register`] adds these.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of an ingestion outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `duplicate`, `rejected`, `dropped` or `dead_letter`.
    pub outcome: &'static str,
}

/// Labels of a plugin's event counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginOutcomeLabel {
    /// The plugin's name.
    pub plugin: String,
    /// `in`, `kept`, `dropped` or `failed`.
    pub outcome: &'static str,
}

/// Label of a plugin's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin's name.
    pub plugin: String,
}

/// Labels of a custom plugin's faults.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFaultLabel {
    /// The plugin's name.
    pub plugin: String,
    /// `fuel`, `wall_time`, `memory`, `trap`, `malformed`, `config` or
    /// `suspended`.
    pub fault: &'static str,
}

fn plugin_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

/// Per-plugin metrics of the pipelines; clones share the same series.
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    /// Events by plugin and outcome (`in`, `kept`, `dropped`, `failed`).
    pub events: Family<PluginOutcomeLabel, Counter>,
    /// Seconds per plugin call on a batch.
    pub seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Custom plugins' batches cut short, by plugin and fault.
    pub faults: Family<PluginFaultLabel, Counter>,
    /// Custom plugins' log lines over their rate, dropped.
    pub log_dropped: Family<PluginLabel, Counter>,
    /// Custom plugin instances (WASM) or workers (Python) started.
    pub instances: Family<PluginLabel, Counter>,
    /// Custom plugin components compiled (not found in the disk cache).
    pub compilations: Counter,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            seconds: Family::new_with_constructor(plugin_seconds),
            faults: Family::default(),
            log_dropped: Family::default(),
            instances: Family::default(),
            compilations: Counter::default(),
        }
    }
}

impl PluginMetrics {
    /// Registers the metrics under the `orrery_plugin` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orrery_plugin_events",
            "Events seen by each plugin, by outcome (in, kept, dropped, failed)",
            self.events.clone(),
        );
        registry.register(
            "orrery_plugin_duration_seconds",
            "Duration of one plugin call on a batch",
            self.seconds.clone(),
        );
        registry.register(
            "orrery_plugin_faults",
            "Custom plugin batches cut short, by fault (fuel, wall_time, memory, trap, malformed, config, suspended)",
            self.faults.clone(),
        );
        registry.register(
            "orrery_plugin_log_lines_dropped",
            "Custom plugin log lines over the plugin's rate, dropped",
            self.log_dropped.clone(),
        );
        registry.register(
            "orrery_plugin_instances_started",
            "Custom plugin instances (WASM) and workers (Python) started",
            self.instances.clone(),
        );
        registry.register(
            "orrery_plugin_compilations",
            "Custom plugin components compiled (not found in the disk cache)",
            self.compilations.clone(),
        );
    }

    /// The fault counter of `plugin` for `fault`.
    pub fn fault(&self, plugin: &str, fault: &'static str) -> Counter {
        self.faults
            .get_or_create(&PluginFaultLabel {
                plugin: plugin.to_owned(),
                fault,
            })
            .clone()
    }

    /// A per-plugin counter of `family`.
    pub fn of(family: &Family<PluginLabel, Counter>, plugin: &str) -> Counter {
        family
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .clone()
    }

    /// The series of one plugin, resolved once (no label lookups on the
    /// hot path).
    pub fn for_plugin(&self, plugin: &str) -> PluginSeries {
        let counter = |outcome| {
            self.events
                .get_or_create(&PluginOutcomeLabel {
                    plugin: plugin.to_owned(),
                    outcome,
                })
                .clone()
        };
        PluginSeries {
            events_in: counter("in"),
            kept: counter("kept"),
            dropped: counter("dropped"),
            failed: counter("failed"),
            seconds: self
                .seconds
                .get_or_create(&PluginLabel {
                    plugin: plugin.to_owned(),
                })
                .clone(),
        }
    }
}

/// One plugin's series (handles into [`PluginMetrics`]).
#[derive(Clone, Debug)]
pub struct PluginSeries {
    /// Events passed to the plugin.
    pub events_in: Counter,
    /// Kept.
    pub kept: Counter,
    /// Dropped on purpose.
    pub dropped: Counter,
    /// Failed (its `on_error` policy applied).
    pub failed: Counter,
    /// Seconds per call.
    pub seconds: Histogram,
}

/// Metrics of ingestion and the writer; clones share the same series.
#[derive(Clone, Debug)]
pub struct CoreMetrics {
    /// Events by outcome.
    pub events: Family<OutcomeLabel, Counter>,
    /// Events (and dead letters) waiting for the writer.
    pub queue_depth: Gauge,
    /// Events per commit.
    pub batch_size: Histogram,
    /// Seconds per commit.
    pub commit_seconds: Histogram,
    /// Commits that failed and were retried in smaller parts.
    pub commit_failures: Counter,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            queue_depth: Gauge::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            commit_failures: Counter::default(),
        }
    }
}

impl CoreMetrics {
    /// Registers every metric under the `orrery` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orrery_events",
            "Events received, by outcome",
            self.events.clone(),
        );
        registry.register(
            "orrery_writer_queue_depth",
            "Events waiting for the writer",
            self.queue_depth.clone(),
        );
        registry.register(
            "orrery_writer_batch_size",
            "Events per group commit",
            self.batch_size.clone(),
        );
        registry.register(
            "orrery_writer_commit_duration_seconds",
            "Duration of group commits",
            self.commit_seconds.clone(),
        );
        registry.register(
            "orrery_writer_commit_failures",
            "Group commits that failed and were retried in parts",
            self.commit_failures.clone(),
        );
    }

    /// Counts `n` events of `outcome`.
    pub fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(n);
        }
    }
}
