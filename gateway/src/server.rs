//! `orrery serve`: start, serve, and shut down without losing events.

use anyhow::Context;
use orrery_core::config::{Config, redact_url};
use tracing::info;

use crate::state::State;

/// Opens the database (migrating it), builds the pipeline, and serves HTTP
/// until SIGINT or SIGTERM; then stops accepting, finishes the requests in
/// flight, commits the writer's queue and exits.
///
/// # Errors
/// A message naming what failed: the database (URL without password), the
/// listen address, the secrets.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = State::open(config).await?;
    let store = state.store.clone();
    let listen = &state.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.clone());
    raise_open_file_limit(state.config.http.max_connections);
    let projects = store.list_projects(None).await?.len();
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
    crate::jobs::spawn_rollups(state.clone());
    crate::jobs::spawn_auth_cleanup(state.clone());

    // Live streams never end by themselves: close them when stopping, so
    // that the graceful shutdown does not wait for their subscribers.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        live.close_all();
    };
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
