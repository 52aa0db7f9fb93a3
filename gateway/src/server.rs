//! `orrery serve`: start, serve, and shut down without losing events.

use std::time::Duration;

use anyhow::Context;
use orrery_core::config::{Config, redact_url};
use orrery_core::store::Store;
use tracing::info;

use crate::state::State;

/// Opens the database (migrating it), builds the pipeline, and serves HTTP
/// until SIGINT or SIGTERM; then stops accepting, finishes the requests in
/// flight, commits the writer's queue and exits.
///
/// # Errors
/// A message naming what failed: the database (URL without password), the
/// listen address, the secrets.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    crate::settings::ensure_secrets(&mut config)?;
    let store = Store::connect(&config).await?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating {}", redact_url(&config.effective_database_url())))?;
    let secret = config.secrets.instance_key();
    // Compile the user-agent regexes now rather than in the first request.
    tokio::task::spawn_blocking(orrery_plugins::user_agent::warm_up)
        .await
        .context("warming up the user-agent parser")??;
    let registry = orrery_plugins::Registry::new(
        &secret,
        orrery_plugins::RegistryConfig {
            timeout: Duration::from_millis(config.pipeline.plugin_timeout_ms),
            geoip_database: config.pipeline.geoip_database.clone(),
            geoip_asn_database: config.pipeline.geoip_asn_database.clone(),
        },
        Some(store.clone()),
        orrery_core::metrics::PluginMetrics::default(),
    );
    let pipelines = crate::pipelines::Pipelines::new(
        registry,
        Duration::from_secs(config.pipeline.reload_secs),
    )
    .context("building the default pipeline (see [pipeline] in the configuration)")?;
    if config.pipeline.geoip_database.is_none() {
        info!(
            "geoip: no database configured (pipeline.geoip_database); events get no location \
             unless a project's pipeline names a database or provider"
        );
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.clone());
    raise_open_file_limit(config.http.max_connections);
    let projects = store.list_projects(None).await?.len();
    let exec = if config.execute.enabled {
        Some(
            crate::execution::Executor::start(&config, crate::execution::ExecMetrics::default())
                .await?,
        )
    } else {
        None
    };
    let state = State::new(config, store.clone(), pipelines, exec);
    // Install the handlers before announcing the address, so that a signal
    // sent as soon as we listen is a graceful shutdown, not a kill.
    let shutdown = shutdown_signal()?;

    println!("orrery listening on http://{local}");
    println!(
        "database: {}",
        redact_url(&state.config.effective_database_url())
    );
    if projects == 0 {
        println!(
            "no project yet: run `orrery init` (same --data-dir / --database-url) to create one and print its keys"
        );
    }
    info!(%local, "listening");
    crate::jobs::spawn_insights(state.clone());

    crate::connections::serve(
        listener,
        crate::app(state.clone()),
        crate::connections::Limits::from_config(&state.config.http),
        state.http_metrics.clone(),
        shutdown,
    )
    .await
    .context("server error")?;
    info!("draining the write queue");
    state.writer.close().await;
    store.close().await;
    println!("orrery stopped; every acknowledged event is committed");
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        info!("shutdown requested");
    })
}

/// Raises the soft limit of open files to the hard one: each connection is
/// a descriptor, and the default soft limit (often 1024) is far below
/// `http.max_connections`. Warns when even the hard limit is below it.
fn raise_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::debug!(soft, hard, "could not raise the open-file limit");
    }
    // Descriptors for the database, the sandbox and the log besides.
    let needed = max_connections as u64 + 256;
    if hard < needed {
        tracing::warn!(
            limit = hard,
            max_connections,
            "the open-file limit is below http.max_connections + 256: new connections may fail \
             with 'too many open files' before the cap is reached; lower http.max_connections \
             or raise the limit (ulimit -n)"
        );
    }
}
