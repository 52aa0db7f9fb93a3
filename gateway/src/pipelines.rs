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

/// What a project's stored pipeline holds: its stages and query stages.
type Specs = (Vec<StageSpec>, Vec<StageSpec>);

/// A project's built pipelines.
#[derive(Debug, Clone)]
pub struct Built {
    /// Run on events as they are ingested.
    pub ingest: Arc<Pipeline>,
    /// Run on events as they are read (`None`: no query stages).
    pub query: Option<Arc<Pipeline>>,
}

struct Cached {
    built: Built,
    /// What it was built from; `None` for the default pipeline. A reload
    /// that finds the same stages keeps the built pipeline (and its
    /// plugins' caches).
    specs: Option<Specs>,
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

    /// The ingestion pipeline of `project`. When its stored stages cannot
    /// be read, the last known pipeline (or the default) is used, with a
    /// warning.
    pub async fn for_project(&self, store: &Store, project: Uuid) -> Arc<Pipeline> {
        self.built(store, project).await.ingest
    }

    /// The query pipeline of `project`, when it has query stages.
    pub async fn query_for_project(&self, store: &Store, project: Uuid) -> Option<Arc<Pipeline>> {
        self.built(store, project).await.query
    }

    #[tracing::instrument(level = "debug", skip(self, store))]
    async fn built(&self, store: &Store, project: Uuid) -> Built {
        if let Some(c) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&project)
            && self.fresh(c)
        {
            return c.built.clone();
        }
        let stale = {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(&project) {
                Some(c) if self.fresh(c) => return c.built.clone(),
                Some(c) => {
                    // Stale: this caller refreshes it, the others go on
                    // with the old one meanwhile.
                    c.loaded = Instant::now();
                    Some(c.built.clone())
                }
                None => None,
            }
        };
        let fallback = stale.unwrap_or_else(|| self.default_built());
        self.load(store, project).await.unwrap_or(fallback)
    }

    fn default_built(&self) -> Built {
        Built {
            ingest: Arc::clone(&self.default),
            query: None,
        }
    }

    /// The custom plugins' generation (0 without any).
    fn generation(&self) -> u64 {
        self.registry.custom().map_or(0, |c| c.generation())
    }

    fn fresh(&self, c: &Cached) -> bool {
        c.loaded.elapsed() < self.reload && c.generation == self.generation()
    }

    async fn load(&self, store: &Store, project: Uuid) -> Option<Built> {
        let specs = match store.get_pipeline(project).await {
            Ok(stored) => stored.map(|s| (s.stages, s.query_stages)),
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
            && c.specs == specs
            && c.generation == self.generation()
        {
            return Some(c.built.clone());
        }
        let generation = self.generation();
        let built = match &specs {
            None => self.default_built(),
            Some((stages, query)) => match self.build(stages, query) {
                Ok(b) => b,
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
                        .map(|c| c.built.clone());
                    warn!(%project, %error, kept_last = last.is_some(),
                        "stored pipeline no longer builds; keeping the last one built, or the default");
                    last.unwrap_or_else(|| self.default_built())
                }
            },
        };
        self.set_at(project, specs, built.clone(), generation);
        Some(built)
    }

    /// Validates `stages` and `query_stages` and builds them.
    ///
    /// # Errors
    /// [`SpecError`] naming the invalid field.
    pub fn build(
        &self,
        stages: &[StageSpec],
        query_stages: &[StageSpec],
    ) -> Result<Built, SpecError> {
        let ingest = Arc::new(self.registry.build(stages)?);
        let query = if query_stages.is_empty() {
            None
        } else {
            Some(Arc::new(self.registry.build_query(query_stages)?))
        };
        Ok(Built { ingest, query })
    }

    /// Makes `built`, from `stages` and `query_stages`, the project's
    /// pipelines for the next batch and the next read.
    pub fn set(
        &self,
        project: Uuid,
        stages: Vec<StageSpec>,
        query_stages: Vec<StageSpec>,
        built: Built,
    ) {
        self.set_at(
            project,
            Some((stages, query_stages)),
            built,
            self.generation(),
        );
    }

    fn set_at(&self, project: Uuid, specs: Option<Specs>, built: Built, generation: u64) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                project,
                Cached {
                    built,
                    specs,
                    loaded: Instant::now(),
                    generation,
                },
            );
    }

    /// Puts the project back on the default pipeline (no query stages).
    pub fn reset(&self, project: Uuid) {
        self.set_at(project, None, self.default_built(), self.generation());
    }
}

/// Runs a project's query stages over events being read: answers the
/// events the stages kept (as they changed them), in order; an event a
/// stage dropped, or failed on under `drop`, is left out.
pub async fn read_through(
    query: &Pipeline,
    events: Vec<orrery_core::event::Event>,
) -> Vec<orrery_core::event::Event> {
    use orrery_core::event::{Envelope, RequestContext};
    use orrery_core::pipeline::Fate;
    // Reads carry no request context: query stages see the stored event.
    let context = Arc::new(RequestContext {
        server_side: true,
        ..RequestContext::default()
    });
    let batch = events
        .into_iter()
        .map(|event| Envelope {
            event,
            context: Arc::clone(&context),
        })
        .collect();
    query
        .run(batch)
        .await
        .into_iter()
        .filter_map(|(env, fate)| matches!(fate, Fate::Store).then_some(env.event))
        .collect()
}

/// The id of a session's `$session` event: from a hash of the project and
/// the session id.
fn session_event_id(project: Uuid, session: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(project.as_bytes())
        .chain_update(session.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Name of the event a session is shown to query stages as.
pub const SESSION_EVENT: &str = "$session";

/// Runs a project's query stages over sessions being read. Each session is
/// shown to the stages as a `$session` event: `session_id`, `distinct_id`,
/// `visitor_id`, `url` = its entry page, `timestamp` = its start, and
/// `properties` = `exit_page`, `events`, `pageviews`, `duration_ms`,
/// `bounce`. What a stage changes in `distinct_id`, `visitor_id`, `url`
/// (the entry page) and `properties.exit_page` is shown; a session whose
/// event is dropped is left out.
pub async fn read_sessions_through(
    query: &Pipeline,
    project: Uuid,
    sessions: Vec<orrery_core::store::Session>,
) -> Vec<orrery_core::store::Session> {
    use orrery_core::event::Event;
    use serde_json::{Map, Value};
    let events: Vec<Event> = sessions
        .iter()
        .map(|s| {
            let mut properties = Map::new();
            properties.insert("exit_page".into(), Value::from(s.exit_page.clone()));
            properties.insert("events".into(), Value::from(s.events));
            properties.insert("pageviews".into(), Value::from(s.pageviews));
            properties.insert("duration_ms".into(), Value::from(s.duration_ms));
            properties.insert("bounce".into(), Value::from(s.bounce));
            Event {
                // Stable per session, so plugins may key on it.
                id: session_event_id(project, &s.session_id),
                project_id: project,
                name: SESSION_EVENT.to_owned(),
                distinct_id: s.distinct_id.clone(),
                session_id: Some(s.session_id.clone()),
                timestamp: s.started_at,
                received_at: s.ended_at,
                url: s.entry_page.clone(),
                referrer: None,
                user_agent: None,
                properties,
                ip_hash: None,
                visitor_id: s.visitor_id.clone(),
                enrichment: Map::new(),
            }
        })
        .collect();
    let kept = read_through(query, events).await;
    let mut by_id: HashMap<String, Event> = kept
        .into_iter()
        .filter_map(|e| Some((e.session_id.clone()?, e)))
        .collect();
    sessions
        .into_iter()
        .filter_map(|mut s| {
            let e = by_id.remove(&s.session_id)?;
            s.distinct_id = e.distinct_id;
            s.visitor_id = e.visitor_id;
            s.entry_page = e.url;
            s.exit_page = e
                .properties
                .get("exit_page")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some(s)
        })
        .collect()
}
