//! `orrery serve`: start, serve, and shut down without losing events.

use std::time::Duration;

use anyhow::Context;
use orrery_core::config::{Config, redact_url};
use orrery_core::store::Store;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::{LocalAddr, RemoteAddr};
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
    let secret = config
        .secrets
        .ip_hash_key
        .as_ref()
        .map(|s| s.expose().as_bytes().to_vec())
        .unwrap_or_default();
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
    let acceptor = TcpListener::bind(config.listen.clone())
        .into_acceptor()
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .map(|a| a.to_string())
        .unwrap_or_else(|| config.listen.clone());
    let shutdown_timeout = Duration::from_secs(config.http.shutdown_timeout_secs);
    let projects = store.list_projects(None).await?.len();
    let exec = if config.execute.enabled {
        Some(crate::exec::Executor::start(&config, crate::exec::ExecMetrics::default()).await?)
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

    poem::Server::new_with_acceptor(NoDelay(acceptor))
        .run_with_graceful_shutdown(crate::app(state.clone()), shutdown, Some(shutdown_timeout))
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

/// Sets `TCP_NODELAY` on every accepted connection: answers and WebSocket
/// messages are small, and Nagle's algorithm would hold a second small
/// write (a streamed chunk after a `started` message, say) until the
/// client's delayed ACK, some 40 ms later.
struct NoDelay(TcpAcceptor);

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        if let Err(error) = io.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        Ok((io, local, remote, scheme))
    }
}
