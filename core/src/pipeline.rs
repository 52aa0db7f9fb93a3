//! The pipeline: a project's ordered plugins, applied to a batch.
//!
//! Each plugin call is bounded by a time limit; a plugin that fails,
//! panics, times out or returns a malformed answer has its `on_error`
//! policy applied to the events concerned, and the batch goes on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::event::Envelope;
use crate::metrics::{PluginMetrics, PluginSeries};
use crate::plugin::{OnError, Plugin, Verdict};

/// One stage of a project's pipeline as configured and stored: which
/// plugin, its config, its `on_error` policy and time limit. The plugin
/// registry turns a list of these into a [`Pipeline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The registered plugin name, e.g. `geoip`.
    pub plugin: String,
    /// The plugin's own configuration (a JSON object; `{}` for defaults).
    #[serde(default)]
    pub config: Map<String, Value>,
    /// What happens to an event the plugin fails on.
    #[serde(default)]
    pub on_error: OnError,
    /// Time limit of one call on a batch, in milliseconds; the instance
    /// default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

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
    /// One entry per stage, when metrics are on.
    metrics: Option<Vec<PluginSeries>>,
}

impl Pipeline {
    /// A pipeline of the given stages, in order.
    pub fn new(stages: Vec<Stage>) -> Self {
        Self {
            stages,
            metrics: None,
        }
    }

    /// Counts events and times calls per plugin in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: PluginMetrics) -> Self {
        self.metrics = Some(
            self.stages
                .iter()
                .map(|s| metrics.for_plugin(s.plugin.name()))
                .collect(),
        );
        self
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
        for (i, stage) in self.stages.iter().enumerate() {
            if work.is_empty() {
                break;
            }
            let series = self.metrics.as_ref().map(|m| &m[i]);
            let name = stage.plugin.name();
            // A panic inside the plugin is caught here and treated as a
            // failure of the batch: the events were only borrowed by it.
            let call = AssertUnwindSafe(stage.plugin.process(&mut work)).catch_unwind();
            let started = Instant::now();
            let outcome = tokio::time::timeout(stage.timeout, call).await;
            if let Some(m) = series {
                m.seconds.observe(started.elapsed().as_secs_f64());
                m.events_in.inc_by(work.len() as u64);
            }
            let verdicts: Vec<Verdict> = match outcome {
                Ok(Err(_panic)) => {
                    let reason = "panicked".to_owned();
                    warn!(plugin = %name, "plugin panicked");
                    vec![Verdict::Fail(reason); work.len()]
                }
                Ok(Ok(Ok(v))) if v.len() == work.len() => v,
                Ok(Ok(Ok(v))) => {
                    let reason = format!("returned {} verdicts for {} events", v.len(), work.len());
                    warn!(plugin = %name, %reason, "plugin misbehaved");
                    vec![Verdict::Fail(reason); work.len()]
                }
                Ok(Ok(Err(error))) => {
                    warn!(plugin = %name, %error, "plugin failed on a batch");
                    vec![Verdict::Fail(error.to_string()); work.len()]
                }
                Err(_) => {
                    let reason = format!("timed out after {} ms", stage.timeout.as_millis());
                    warn!(plugin = %name, %reason, "plugin cut off");
                    vec![Verdict::Fail(reason); work.len()]
                }
            };
            if let Some(m) = series {
                let (mut kept, mut dropped, mut failed) = (0, 0, 0);
                for v in &verdicts {
                    match v {
                        Verdict::Keep => kept += 1,
                        Verdict::Drop(_) => dropped += 1,
                        Verdict::Fail(_) => failed += 1,
                    }
                }
                m.kept.inc_by(kept);
                m.dropped.inc_by(dropped);
                m.failed.inc_by(failed);
            }
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use async_trait::async_trait;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::event::{EventLimits, RequestContext, parse_event};
    use crate::plugin::PluginError;

    /// A plugin that behaves as told, per event name.
    struct Scripted {
        name: &'static str,
        behaviour: &'static str,
    }

    #[async_trait]
    impl Plugin for Scripted {
        fn name(&self) -> &str {
            self.name
        }

        async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
            match self.behaviour {
                "panic" => panic!("plugin bug"),
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(vec![Verdict::Keep; batch.len()])
                }
                "error" => Err(PluginError::Failed {
                    plugin: self.name.to_owned(),
                    reason: "backend down".to_owned(),
                }),
                "short" => Ok(Vec::new()),
                _ => Ok(batch
                    .iter_mut()
                    .map(|e| {
                        e.event.enrichment.insert(self.name.to_owned(), json!(true));
                        match e.event.name.as_str() {
                            "drop-me" => Verdict::Drop("unwanted".to_owned()),
                            "fail-me" => Verdict::Fail("cannot".to_owned()),
                            _ => Verdict::Keep,
                        }
                    })
                    .collect()),
            }
        }
    }

    fn stage(name: &'static str, behaviour: &'static str, on_error: OnError) -> Stage {
        Stage {
            plugin: Arc::new(Scripted { name, behaviour }),
            on_error,
            timeout: Duration::from_millis(50),
        }
    }

    fn batch(names: &[&str]) -> Vec<Envelope> {
        let ctx = Arc::new(RequestContext {
            ip: Some("203.0.113.1".parse::<IpAddr>().unwrap()),
            ..RequestContext::default()
        });
        names
            .iter()
            .map(|n| Envelope {
                event: parse_event(
                    &json!({ "event": n }),
                    Uuid::nil(),
                    1_795_430_000_000,
                    EventLimits {
                        max_event_bytes: 1024,
                    },
                )
                .unwrap(),
                context: ctx.clone(),
            })
            .collect()
    }

    fn fates(out: &[(Envelope, Fate)]) -> Vec<&'static str> {
        out.iter()
            .map(|(_, f)| match f {
                Fate::Store => "store",
                Fate::Dropped { .. } => "dropped",
                Fate::DeadLetter { .. } => "dead_letter",
            })
            .collect()
    }

    #[tokio::test]
    async fn plugins_run_in_order_and_verdicts_apply_per_event() {
        let p = Pipeline::new(vec![
            stage("first", "ok", OnError::Skip),
            stage("second", "ok", OnError::DeadLetter),
        ]);
        let out = p.run(batch(&["a", "drop-me", "fail-me", "b"])).await;
        // `fail-me` goes on past `first` (skip), then `second` fails it
        // under dead_letter.
        assert_eq!(fates(&out), ["store", "dropped", "dead_letter", "store"]);
        let out = Pipeline::new(vec![stage("first", "ok", OnError::Skip)])
            .run(batch(&["fail-me"]))
            .await;
        assert_eq!(fates(&out), ["store"]);
        let (env, _) = &p.run(batch(&["a"])).await[0];
        assert_eq!(env.event.enrichment["first"], true);
        assert_eq!(env.event.enrichment["second"], true);
        // A dropped event is not seen by later plugins.
        let out = p.run(batch(&["drop-me"])).await;
        assert!(!out[0].0.event.enrichment.contains_key("second"));
    }

    #[tokio::test]
    async fn a_panicking_plugin_is_contained_by_its_policy() {
        for (policy, want) in [
            (OnError::Skip, "store"),
            (OnError::Drop, "dropped"),
            (OnError::DeadLetter, "dead_letter"),
        ] {
            let p = Pipeline::new(vec![
                stage("bad", "panic", policy),
                stage("after", "ok", OnError::Skip),
            ]);
            let out = p.run(batch(&["a", "b"])).await;
            assert_eq!(fates(&out), [want, want], "{policy:?}");
            if policy == OnError::Skip {
                assert_eq!(
                    out[0].0.event.enrichment["after"], true,
                    "the batch goes on"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_plugin_past_its_time_limit_is_cut_off() {
        let p = Pipeline::new(vec![stage("slow", "sleep", OnError::DeadLetter)]);
        let started = std::time::Instant::now();
        let out = p.run(batch(&["a"])).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        match &out[0].1 {
            Fate::DeadLetter { plugin, error } => {
                assert_eq!(plugin, "slow");
                assert!(error.contains("timed out"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_and_malformed_answers_apply_the_policy() {
        let out = Pipeline::new(vec![stage("e", "error", OnError::Drop)])
            .run(batch(&["a"]))
            .await;
        assert_eq!(fates(&out), ["dropped"]);
        let out = Pipeline::new(vec![stage("s", "short", OnError::DeadLetter)])
            .run(batch(&["a", "b"]))
            .await;
        assert_eq!(fates(&out), ["dead_letter", "dead_letter"]);
    }
}
