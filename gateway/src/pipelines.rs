//! Each project's pipeline, built from its stored stages and cached.
//!
//! A project without stored stages shares the default pipeline, built once
//! at start (so a missing geoip database is reported then). A change made
//! through this instance replaces the cached pipeline at once, so the next
//! batch uses it; a change made through another instance sharing the
//! database is picked up after `pipeline.reload_secs`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use orrery_core::pipeline::{Pipeline, StageSpec};
use orrery_core::store::Store;
use orrery_plugins::{Registry, SpecError};
use tracing::warn;
use uuid::Uuid;

struct Cached {
    pipeline: Arc<Pipeline>,
    /// What it was built from; `None` for the default pipeline. A reload
    /// that finds the same stages keeps the built pipeline (and its
    /// plugins' caches).
    stages: Option<Vec<StageSpec>>,
    loaded: Instant,
    /// The custom plugins' generation it was built at: a plugin replaced
    /// or removed since makes it stale.
    generation: u64,
}

/// The pipelines of all projects.
pub struct Pipelines {
    registry: Registry,
    default: Arc<Pipeline>,
    cache: RwLock<HashMap<Uuid, Cached>>,
    reload: Duration,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

impl Pipelines {
    /// Builds the default pipeline with `registry`.
    ///
    /// # Errors
    /// When the default stages do not build (a bad instance setting).
    pub fn new(registry: Registry, reload: Duration) -> Result<Self, SpecError> {
        let default = Arc::new(registry.build(&Registry::default_stages())?);
        Ok(Self {
            registry,
            default,
            cache: RwLock::new(HashMap::new()),
            reload,
        })
    }

    /// The registry (to validate stage lists).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The pipeline of `project`. When its stored stages cannot be read,
    /// the last known pipeline (or the default) is used, with a warning.
    #[tracing::instrument(level = "debug", skip(self, store))]
    pub async fn for_project(&self, store: &Store, project: Uuid) -> Arc<Pipeline> {
        if let Some(c) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&project)
            && self.fresh(c)
        {
            return Arc::clone(&c.pipeline);
        }
        let stale = {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(&project) {
                Some(c) if self.fresh(c) => return Arc::clone(&c.pipeline),
                Some(c) => {
                    // Stale: this caller refreshes it, the others go on
                    // with the old one meanwhile.
                    c.loaded = Instant::now();
                    Some(Arc::clone(&c.pipeline))
                }
                None => None,
            }
        };
        let fallback = stale.unwrap_or_else(|| Arc::clone(&self.default));
        self.load(store, project).await.unwrap_or(fallback)
    }

    /// The custom plugins' generation (0 without any).
    fn generation(&self) -> u64 {
        self.registry.custom().map_or(0, |c| c.generation())
    }

    fn fresh(&self, c: &Cached) -> bool {
        c.loaded.elapsed() < self.reload && c.generation == self.generation()
    }

    async fn load(&self, store: &Store, project: Uuid) -> Option<Arc<Pipeline>> {
        let stages = match store.get_pipeline(project).await {
            Ok(stored) => stored.map(|s| s.stages),
            Err(error) => {
                warn!(%project, %error, "cannot read the project's pipeline");
                return None;
            }
        };
        if let Some(c) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&project)
            && c.stages == stages
            && c.generation == self.generation()
        {
            return Some(Arc::clone(&c.pipeline));
        }
        let generation = self.generation();
        let pipeline = match &stages {
            None => Arc::clone(&self.default),
            Some(list) => match self.registry.build(list) {
                Ok(p) => Arc::new(p),
                Err(error) => {
                    // Stored stages were valid when written; a plugin or
                    // setting changed since (a plugin file removed, say).
                    // Keep the events flowing on the last pipeline built,
                    // or else the default.
                    let last = self
                        .cache
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&project)
                        .map(|c| Arc::clone(&c.pipeline));
                    warn!(%project, %error, kept_last = last.is_some(),
                        "stored pipeline no longer builds; keeping the last one built, or the default");
                    last.unwrap_or_else(|| Arc::clone(&self.default))
                }
            },
        };
        self.set_at(project, stages, Arc::clone(&pipeline), generation);
        Some(pipeline)
    }

    /// Validates `stages` and builds them into a pipeline.
    ///
    /// # Errors
    /// [`SpecError`] naming the invalid field.
    pub fn build(&self, stages: &[StageSpec]) -> Result<Arc<Pipeline>, SpecError> {
        self.registry.build(stages).map(Arc::new)
    }

    /// Makes `pipeline`, built from `stages` (`None`: the default), the
    /// project's pipeline for the next batch.
    pub fn set(&self, project: Uuid, stages: Option<Vec<StageSpec>>, pipeline: Arc<Pipeline>) {
        self.set_at(project, stages, pipeline, self.generation());
    }

    fn set_at(
        &self,
        project: Uuid,
        stages: Option<Vec<StageSpec>>,
        pipeline: Arc<Pipeline>,
        generation: u64,
    ) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                project,
                Cached {
                    pipeline,
                    stages,
                    loaded: Instant::now(),
                    generation,
                },
            );
    }

    /// Puts the project back on the default pipeline.
    pub fn reset(&self, project: Uuid) {
        self.set(project, None, Arc::clone(&self.default));
    }
}
