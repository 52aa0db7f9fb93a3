//! The shared state of a running gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use orrery_core::config::{Config, redact_url};
use orrery_core::metrics::CoreMetrics;
use orrery_core::store::Store;
use orrery_core::writer::{Writer, WriterConfig};
use prometheus_client::registry::Registry;

use crate::api::params::Cursors;
use crate::execution::Executor;
use crate::http_metrics::HttpMetrics;
use crate::keys::KeyCache;
use crate::pipelines::Pipelines;

/// Everything a handler needs; shared behind an `Arc`.
#[derive(Debug)]
pub struct State {
    /// The effective configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The group-commit writer.
    pub writer: Writer,
    /// Each project's pipeline.
    pub pipelines: Pipelines,
    /// Key lookups.
    pub keys: KeyCache,
    /// Seals and opens page cursors.
    pub cursors: Cursors,
    /// Core metrics (events, writer).
    pub core_metrics: CoreMetrics,
    /// HTTP metrics.
    pub http_metrics: HttpMetrics,
    /// The code-execution service, unless switched off.
    pub exec: Option<Arc<Executor>>,
    /// The registry holding all metrics.
    pub registry: Registry,
    /// When the server started.
    pub started: Instant,
    /// Statistics answers.
    pub stats_cache: crate::stats_cache::StatsCache,
    /// Projects named in `compat` settings, known to exist.
    pub compat_projects: crate::compat::KnownProjects,
    /// Accounts: passwords, tokens, the revocation check.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Token buckets per client IP and per key.
    pub rate_limiter: crate::rate_limit::RateLimiter,
    /// The live event stream's subscribers.
    pub live: Arc<crate::live::Hub>,
}

/// Cheap-to-clone handle to [`State`].
pub type AppState = Arc<State>;

impl State {
    /// Opens everything a gateway serves from: the secrets (created in the
    /// data directory when missing), the database (migrated), the plugin
    /// registry and pipelines, and the code-execution service when
    /// `execute.enabled`. `orrery serve` and the in-process tests both start
    /// here.
    ///
    /// # Errors
    /// A message naming what failed: the secrets, the database (URL without
    /// password), the default pipeline, the sandbox.
    #[tracing::instrument(name = "open_state", skip_all)]
    pub async fn open(mut config: Config) -> anyhow::Result<AppState> {
        crate::settings::ensure_secrets(&mut config)?;
        let store = Store::connect(&config).await?;
        store.migrate().await.with_context(|| {
            format!("migrating {}", redact_url(&config.effective_database_url()))
        })?;
        let secret = config.secrets.instance_key();
        // Compile the user-agent regexes now rather than in the first request.
        tokio::task::spawn_blocking(orrery_plugins::user_agent::warm_up)
            .await
            .context("warming up the user-agent parser")??;
        let metrics = orrery_core::metrics::PluginMetrics::default();
        let catalog = crate::custom_plugins::open(&config, &store, metrics.clone()).await?;
        let registry = orrery_plugins::Registry::new(
            &secret,
            orrery_plugins::RegistryConfig {
                timeout: Duration::from_millis(config.pipeline.plugin_timeout_ms),
                geoip_database: config.pipeline.geoip_database.clone(),
                geoip_asn_database: config.pipeline.geoip_asn_database.clone(),
            },
            Some(store.clone()),
            metrics,
        )
        .with_custom(catalog);
        let pipelines = Pipelines::new(registry, Duration::from_secs(config.pipeline.reload_secs))
            .context("building the default pipeline (see [pipeline] in the configuration)")?;
        if config.pipeline.geoip_database.is_none() {
            tracing::info!(
                "geoip: no database configured (pipeline.geoip_database); events get no location \
                 unless a project's pipeline names a database or provider"
            );
        }
        let exec = if config.execute.enabled {
            Some(Executor::start(&config, crate::execution::ExecMetrics::default()).await?)
        } else {
            None
        };
        Ok(Self::new(config, store, pipelines, exec))
    }

    /// Builds the state and starts the writer (needs a tokio runtime).
    pub fn new(
        config: Config,
        store: Store,
        pipelines: Pipelines,
        exec: Option<Executor>,
    ) -> AppState {
        let core_metrics = CoreMetrics::default();
        let http_metrics = HttpMetrics::default();
        let mut registry = Registry::default();
        core_metrics.register(&mut registry);
        http_metrics.register(&mut registry);
        pipelines.registry().metrics().register(&mut registry);
        if let Some(ex) = &exec {
            ex.metrics.register(&mut registry);
        }
        let live = Arc::new(crate::live::Hub::new(config.live.clone()));
        live.metrics.register(&mut registry);
        crate::live::bridge::start(&store, &live);
        let writer = Writer::start(
            store.clone(),
            WriterConfig {
                flush_events: config.ingest.flush_events,
                flush_interval: std::time::Duration::from_millis(config.ingest.flush_interval_ms),
                queue_capacity: config.ingest.queue_capacity,
                sessions_flush: std::time::Duration::from_millis(config.ingest.sessions_flush_ms),
            },
            core_metrics.clone(),
        );
        let secret = config.secrets.instance_key();
        let stats_cache = crate::stats_cache::StatsCache::new(
            std::time::Duration::from_secs(config.analytics.cache_ttl_secs),
            config.analytics.cache_entries,
        );
        let accounts = Arc::new(crate::accounts::Accounts::new(&config));
        Arc::new(Self {
            accounts,
            rate_limiter: crate::rate_limit::RateLimiter::new(&config.rate_limit),
            live,
            cursors: Cursors::new(&secret),
            config,
            store,
            writer,
            pipelines,
            keys: KeyCache::default(),
            core_metrics,
            http_metrics,
            exec: exec.map(Arc::new),
            registry,
            started: Instant::now(),
            stats_cache,
            compat_projects: crate::compat::KnownProjects::default(),
        })
    }
}

/// The state attached to every route (`Route::data` in [`crate::app`]).
///
/// # Panics
/// Only if a route was built without the state, which `app` never does.
pub fn app_state(req: &poem::Request) -> &AppState {
    req.data::<AppState>()
        .expect("AppState is attached to every route")
}
