//! The plugin registry: turns a project's stage list into a [`Pipeline`].
//!
//! Every built-in plugin is registered here with one line in
//! `Registry::build_stage`. A stage list is valid when it is not empty,
//! starts with `ip_hash` (exactly once: no raw IP may reach another
//! plugin's output), names only known plugins, and each stage's config
//! parses (unknown fields are refused). Errors name the offending field as
//! a path, e.g. `stages[2].config.inactivity_minutes`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orrery_core::metrics::PluginMetrics;
use orrery_core::pipeline::{Pipeline, Stage, StageSpec};
use orrery_core::plugin::{OnError, Plugin, PluginError};
use orrery_core::store::Store;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::custom::Catalog;
use crate::session::SessionTracker;
use crate::{geoip, ip_hash, referrer, session, user_agent};

/// Longest time limit a stage may set, in ms.
pub const MAX_TIMEOUT_MS: u64 = 10_000;

/// The built-in plugins, in the order of the default pipeline.
pub const BUILT_IN: [&str; 5] = [
    ip_hash::NAME,
    geoip::NAME,
    user_agent::NAME,
    referrer::NAME,
    session::NAME,
];

/// A stage list that cannot be built, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Path of the offending field, e.g. `stages[1].plugin`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Instance-wide inputs of the plugins.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Default time limit per plugin call.
    pub timeout: Duration,
    /// Default `database` of `geoip`.
    pub geoip_database: Option<PathBuf>,
    /// Default `asn_database` of `geoip`.
    pub geoip_asn_database: Option<PathBuf>,
}

/// Builds pipelines from stage lists; one per process.
pub struct Registry {
    ip_hash_secret: Vec<u8>,
    config: RegistryConfig,
    store: Option<Store>,
    sessions: Arc<SessionTracker>,
    metrics: PluginMetrics,
    custom: Option<Arc<Catalog>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over the instance's secret, settings and store (the
    /// `session` plugin reads recent sessions from it).
    pub fn new(
        ip_hash_secret: &[u8],
        config: RegistryConfig,
        store: Option<Store>,
        metrics: PluginMetrics,
    ) -> Self {
        Self {
            ip_hash_secret: ip_hash_secret.to_vec(),
            config,
            store,
            sessions: Arc::new(SessionTracker::new()),
            metrics,
            custom: None,
        }
    }

    /// Lets stages name the custom plugins of `catalog` too.
    #[must_use]
    pub fn with_custom(mut self, catalog: Arc<Catalog>) -> Self {
        self.custom = Some(catalog);
        self
    }

    /// The custom plugins, when there are any.
    pub fn custom(&self) -> Option<&Arc<Catalog>> {
        self.custom.as_ref()
    }

    /// Whether `name` is a plugin a stage may name.
    pub fn knows(&self, name: &str) -> bool {
        BUILT_IN.contains(&name) || self.custom.as_ref().is_some_and(|c| c.get(name).is_some())
    }

    /// Every plugin name a stage may use: the built-ins, then the custom
    /// ones.
    pub fn known(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILT_IN.iter().map(|&n| n.to_owned()).collect();
        if let Some(c) = &self.custom {
            names.extend(c.list().iter().map(|p| p.name.clone()));
        }
        names
    }

    /// The per-plugin metrics every pipeline reports to.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// The stages of a project without its own pipeline: `ip_hash`
    /// (`on_error: drop`), then `geoip`, `user_agent`, `referrer` and
    /// `session` (`on_error: skip`), each with its default config.
    pub fn default_stages() -> Vec<StageSpec> {
        BUILT_IN
            .iter()
            .map(|&plugin| StageSpec {
                plugin: plugin.to_owned(),
                config: Map::new(),
                on_error: if plugin == ip_hash::NAME {
                    OnError::Drop
                } else {
                    OnError::Skip
                },
                timeout_ms: None,
            })
            .collect()
    }

    /// Builds the pipeline of `stages`.
    ///
    /// # Errors
    /// [`SpecError`] naming the first invalid field.
    pub fn build(&self, stages: &[StageSpec]) -> Result<Pipeline, SpecError> {
        match stages.first() {
            None => return Err(SpecError::new("stages", "must not be empty")),
            Some(s) if s.plugin != ip_hash::NAME => {
                return Err(SpecError::new(
                    "stages[0].plugin",
                    format!("must be `{}`: it is always first", ip_hash::NAME),
                ));
            }
            Some(_) => {}
        }
        let mut built = Vec::with_capacity(stages.len());
        for (i, spec) in stages.iter().enumerate() {
            if i > 0 && spec.plugin == ip_hash::NAME {
                return Err(SpecError::new(
                    format!("stages[{i}].plugin"),
                    format!("`{}` may appear only once, first", ip_hash::NAME),
                ));
            }
            let at = format!("stages[{i}]");
            let timeout = self.stage_timeout(spec, &at)?;
            let plugin = self
                .build_stage(spec, timeout)
                .map_err(|e| self.stage_error(e, spec, &at))?;
            built.push(Stage {
                plugin,
                on_error: spec.on_error,
                timeout,
            });
        }
        Ok(Pipeline::new(built).with_metrics(self.metrics.clone()))
    }

    /// Builds the query pipeline of `stages`: plugins run on events as they
    /// are read. Its stages name custom plugins only (the built-ins enrich
    /// at ingestion), and `dead_letter` has no meaning on a read. Fields are
    /// named `query_stages[i]...`.
    ///
    /// # Errors
    /// [`SpecError`] naming the first invalid field.
    pub fn build_query(&self, stages: &[StageSpec]) -> Result<Pipeline, SpecError> {
        let mut built = Vec::with_capacity(stages.len());
        for (i, spec) in stages.iter().enumerate() {
            if BUILT_IN.contains(&spec.plugin.as_str()) {
                return Err(SpecError::new(
                    format!("query_stages[{i}].plugin"),
                    format!(
                        "`{}` is a built-in plugin, which enriches at ingestion; query stages \
                         name custom plugins",
                        spec.plugin
                    ),
                ));
            }
            if spec.on_error == OnError::DeadLetter {
                return Err(SpecError::new(
                    format!("query_stages[{i}].on_error"),
                    "must be `skip` or `drop`: a read has no dead letters",
                ));
            }
            let timeout = self.stage_timeout(spec, &format!("query_stages[{i}]"))?;
            let plugin = self
                .build_stage(spec, timeout)
                .map_err(|e| self.stage_error(e, spec, &format!("query_stages[{i}]")))?;
            built.push(Stage {
                plugin,
                on_error: spec.on_error,
                timeout,
            });
        }
        Ok(Pipeline::new(built).with_metrics(self.metrics.clone()))
    }

    fn stage_timeout(&self, spec: &StageSpec, at: &str) -> Result<Duration, SpecError> {
        match spec.timeout_ms {
            None => Ok(self.config.timeout),
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(_) => Err(SpecError::new(
                format!("{at}.timeout_ms"),
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            )),
        }
    }

    fn stage_error(&self, e: StageError, spec: &StageSpec, at: &str) -> SpecError {
        match e {
            StageError::Unknown => SpecError::new(
                format!("{at}.plugin"),
                format!(
                    "unknown plugin `{}`; known: {}",
                    spec.plugin,
                    self.known().join(", ")
                ),
            ),
            StageError::Config { field, reason } => SpecError::new(
                if field.is_empty() {
                    format!("{at}.config")
                } else {
                    format!("{at}.config.{field}")
                },
                reason,
            ),
        }
    }

    /// One plugin instance; the registration of every built-in plugin.
    fn build_stage(
        &self,
        spec: &StageSpec,
        timeout: Duration,
    ) -> Result<Arc<dyn Plugin>, StageError> {
        let config = &spec.config;
        Ok(match spec.plugin.as_str() {
            ip_hash::NAME => Arc::new(ip_hash::IpHash::from_config(
                &self.ip_hash_secret,
                parse(config)?,
            )?),
            geoip::NAME => {
                let mut config = config.clone();
                for (key, default) in [
                    ("database", &self.config.geoip_database),
                    ("asn_database", &self.config.geoip_asn_database),
                ] {
                    if let Some(path) = default
                        && !config.contains_key(key)
                    {
                        config.insert(key.to_owned(), Value::from(path.display().to_string()));
                    }
                }
                Arc::new(geoip::GeoIp::from_config(parse(&config)?)?)
            }
            user_agent::NAME => Arc::new(user_agent::UserAgent::from_config(parse(config)?)?),
            referrer::NAME => Arc::new(referrer::Referrer::from_config(parse(config)?)?),
            session::NAME => Arc::new(session::SessionPlugin::from_config(
                parse(config)?,
                Arc::clone(&self.sessions),
                self.store.clone(),
            )?),
            name => {
                let custom = self.custom.as_ref().and_then(|c| Some((c, c.get(name)?)));
                let Some((catalog, plugin)) = custom else {
                    return Err(StageError::Unknown);
                };
                catalog
                    .stage(&plugin, config, timeout)
                    .map_err(|reason| StageError::Config {
                        field: String::new(),
                        reason,
                    })?
            }
        })
    }
}

enum StageError {
    Unknown,
    Config { field: String, reason: String },
}

impl From<PluginError> for StageError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Config { field, reason, .. } => Self::Config { field, reason },
            PluginError::Failed { reason, .. } => Self::Config {
                field: String::new(),
                reason,
            },
        }
    }
}

/// Parses a stage config, naming the field serde complains about.
fn parse<T: DeserializeOwned>(config: &Map<String, Value>) -> Result<T, StageError> {
    serde_path_to_error::deserialize(Value::Object(config.clone())).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.inner().to_string();
        let field = if path == "." {
            // An unknown or missing field is reported at the root; serde
            // names it in backticks: "unknown field `x`, expected ...".
            reason
                .split('`')
                .nth(1)
                .filter(|f| config.contains_key(*f) || reason.starts_with("missing field"))
                .unwrap_or("")
                .to_owned()
        } else {
            path
        };
        StageError::Config { field, reason }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        Registry::new(
            &[9u8; 32],
            RegistryConfig {
                timeout: Duration::from_millis(100),
                ..RegistryConfig::default()
            },
            None,
            PluginMetrics::default(),
        )
    }

    fn specs(v: Value) -> Vec<StageSpec> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_default_pipeline_builds_in_order() {
        let p = registry().build(&Registry::default_stages()).unwrap();
        let names: Vec<&str> = p.stages().iter().map(|s| s.plugin.name()).collect();
        assert_eq!(names, BUILT_IN);
        assert_eq!(p.stages()[0].on_error, OnError::Drop);
    }

    #[test]
    fn invalid_stage_lists_name_the_field() {
        let r = registry();
        let cases = [
            (json!([]), "stages"),
            (json!([{"plugin": "referrer"}]), "stages[0].plugin"),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "ip_hash"}]),
                "stages[1].plugin",
            ),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "nope"}]),
                "stages[1].plugin",
            ),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "session", "config": {"gap": 1}}]),
                "stages[1].config.gap",
            ),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "session", "config": {"inactivity_minutes": 0}}]),
                "stages[1].config.inactivity_minutes",
            ),
            (
                json!([{"plugin": "ip_hash", "timeout_ms": 0}]),
                "stages[0].timeout_ms",
            ),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "user_agent", "config": {"drop_bots": "yes"}}]),
                "stages[1].config.drop_bots",
            ),
            (
                json!([{"plugin": "ip_hash"}, {"plugin": "referrer", "config": {"internal_hosts": ["a", 3]}}]),
                "stages[1].config.internal_hosts[1]",
            ),
        ];
        for (v, field) in cases {
            let err = r.build(&specs(v.clone())).unwrap_err();
            assert_eq!(err.field, field, "{v} -> {err}");
        }
    }

    #[test]
    fn stage_settings_are_kept() {
        let p = registry()
            .build(&specs(json!([
                {"plugin": "ip_hash"},
                {"plugin": "referrer", "on_error": "dead_letter", "timeout_ms": 250,
                 "config": {"internal_hosts": ["example.com"]}}
            ])))
            .unwrap();
        assert_eq!(p.stages()[1].on_error, OnError::DeadLetter);
        assert_eq!(p.stages()[1].timeout, Duration::from_millis(250));
        assert_eq!(p.stages()[0].timeout, Duration::from_millis(100));
    }
}
