//! Custom plugins as a service (no HTTP): the catalog opened at start,
//! uploads checked and persisted, deletions refused while pipelines name
//! the plugin, and every instance kept in step with the database.
//!
//! Sources, by precedence: the plugin directory (`plugin_dir.rs`), then the
//! `plugins` table (uploads through the API). A name is held by one source;
//! the API refuses a name the directory holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use orrery_core::config::Config;
use orrery_core::metrics::PluginMetrics;
use orrery_core::store::{Store, StoreError, StoredPlugin};
use orrery_plugins::custom::catalog::{CustomPlugin, Origin, PluginKind, PluginSource};
use orrery_plugins::custom::python::PythonHost;
use orrery_plugins::custom::wasm::WasmHost;
use orrery_plugins::custom::{Catalog, PluginLimits};
use orrery_sandbox::python::ZygoteCommand;
use serde_json::{Map, Value};
use tracing::warn;
use uuid::Uuid;

use crate::plugin_dir::PluginDirectory;

/// Why a plugin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginChangeError {
    /// The plugin failed its checks.
    #[error("{0}")]
    Invalid(String),
    /// Creating a name that exists.
    #[error("{0}")]
    Exists(String),
    /// Replacing or deleting a plugin that is not there.
    #[error("no plugin `{0}`")]
    NotFound(String),
    /// Deleting a plugin pipelines name.
    #[error("plugin `{name}` is in the pipeline of project(s) {}; change those pipelines first", .projects.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "))]
    InUse {
        /// The plugin.
        name: String,
        /// The projects whose pipeline names it.
        projects: Vec<Uuid>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the catalog: compiled code cached in `<data_dir>/plugin-cache`,
/// Python plugins run by [`python_host`], the uploaded plugins of the
/// database, then the plugin directory (its bad files logged, not fatal);
/// starts watching both.
///
/// # Errors
/// When the WebAssembly host cannot start or the database cannot be read.
pub async fn open(
    config: &Config,
    store: &Store,
    metrics: PluginMetrics,
) -> anyhow::Result<Arc<Catalog>> {
    let cache = config.data_dir.join("plugin-cache");
    let host = WasmHost::new(Some(cache), metrics.clone()).context("starting the plugin host")?;
    let mut catalog = Catalog::new(Arc::new(host));
    match python_host(config.execute.namespaces, metrics) {
        Ok(python) => catalog = catalog.with_python(python),
        Err(error) => warn!(%error, "Python plugins are unavailable"),
    }
    let catalog = Arc::new(catalog);
    sync_stored(&catalog, store)
        .await
        .context("loading the uploaded plugins")?;
    if let Some(dir) = &config.pipeline.plugin_directory {
        let mut directory = PluginDirectory::new(dir.clone());
        let scanning = Arc::clone(&catalog);
        let directory = tokio::task::spawn_blocking(move || {
            directory.scan(&scanning);
            directory
        })
        .await
        .context("loading the plugin directory")?;
        crate::plugin_dir::spawn_watcher(
            Arc::clone(&catalog),
            directory,
            Duration::from_millis(config.pipeline.plugin_watch_ms),
        );
    }
    spawn_store_sync(
        Arc::clone(&catalog),
        store.clone(),
        Duration::from_secs(config.pipeline.reload_secs.max(1)),
    );
    Ok(catalog)
}

/// The host of Python plugins: workers of a sandbox runtime of their own
/// (the execution service's walls, the plugins' limits), whose zygote is
/// this executable, started with the first Python plugin. Each worker is
/// put in its own namespaces when `namespaces` (`execute.namespaces`).
/// A process that is not the `orrery` binary (an in-process test) gets the
/// host all the same: only its Python plugins fail, saying why.
///
/// # Errors
/// When the current executable cannot be found or the host's I/O thread
/// cannot start.
pub fn python_host(namespaces: bool, metrics: PluginMetrics) -> anyhow::Result<PythonHost> {
    let zygote = ZygoteCommand::current_exe().context("finding the current executable")?;
    let mut config = PythonHost::sandbox_config(zygote);
    config.namespaces = namespaces;
    PythonHost::new(config, metrics).context("starting the Python plugin host")
}

/// The source of a stored plugin.
fn stored_source(p: StoredPlugin) -> Result<PluginSource, String> {
    let kind = match p.kind.as_str() {
        "wasm" => PluginKind::Wasm,
        "python" => PluginKind::Python,
        other => return Err(format!("unknown kind `{other}`")),
    };
    let config = match p.config {
        Value::Object(map) => map,
        _ => return Err("its config is not an object".to_owned()),
    };
    let limits: PluginLimits =
        serde_json::from_value(p.limits).map_err(|e| format!("its limits: {e}"))?;
    Ok(PluginSource {
        name: p.name,
        kind,
        bytes: p.code,
        config,
        limits,
        origin: Origin::Api,
    })
}

/// Brings the uploaded plugins of the catalog in line with the database:
/// new and changed versions checked and loaded, deleted ones unloaded.
/// Plugins of the directory are left alone.
///
/// # Errors
/// When the database cannot be read.
pub async fn sync_stored(catalog: &Arc<Catalog>, store: &Store) -> Result<(), StoreError> {
    let stored: BTreeMap<String, String> = store.plugin_versions().await?.into_iter().collect();
    for (name, sha256) in &stored {
        match catalog.get(name) {
            Some(p) if p.sha256 == *sha256 => continue,
            Some(p) if matches!(p.origin, Origin::Directory(_)) => continue,
            _ => {}
        }
        let Some(row) = store.get_plugin(name).await? else {
            continue;
        };
        let checking = Arc::clone(catalog);
        let checked = tokio::task::spawn_blocking(move || {
            stored_source(row).and_then(|source| checking.check(source))
        })
        .await;
        match checked {
            Ok(Ok(plugin)) => {
                catalog.insert(plugin);
            }
            Ok(Err(reason)) => {
                warn!(plugin = %name, %reason, "a stored plugin does not load here");
            }
            Err(error) => warn!(plugin = %name, %error, "checking a stored plugin failed"),
        }
    }
    for plugin in catalog.list() {
        if plugin.origin == Origin::Api && !stored.contains_key(&plugin.name) {
            catalog.remove(&plugin.name);
        }
    }
    Ok(())
}

/// Polls the database every `every` for plugins changed through another
/// instance.
fn spawn_store_sync(catalog: Arc<Catalog>, store: Store, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(error) = sync_stored(&catalog, &store).await {
                warn!(%error, "cannot read the uploaded plugins");
            }
        }
    });
}

/// A plugin as the API receives it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its name.
    pub name: String,
    /// Its language.
    pub kind: PluginKind,
    /// Its code.
    pub code: Vec<u8>,
    /// Default config.
    pub config: Map<String, Value>,
    /// Limits.
    pub limits: PluginLimits,
}

/// Checks, stores and loads an upload. `replace` says whether a plugin of
/// that name must exist (replace) or must not (create). A plugin that fails
/// its checks changes nothing: the old version keeps running.
///
/// # Errors
/// [`PluginChangeError`] naming the problem.
#[tracing::instrument(skip_all, fields(plugin = %upload.name, replace))]
pub async fn put(
    catalog: &Arc<Catalog>,
    store: &Store,
    upload: Upload,
    replace: bool,
) -> Result<Arc<CustomPlugin>, PluginChangeError> {
    let existing = catalog.get(&upload.name);
    if let Some(p) = &existing
        && let Origin::Directory(path) = &p.origin
    {
        return Err(PluginChangeError::Exists(format!(
            "plugin `{}` comes from the plugin directory ({}); change the file instead",
            p.name,
            path.display()
        )));
    }
    let stored = store.get_plugin(&upload.name).await?.is_some();
    match (replace, stored || existing.is_some()) {
        (false, true) => {
            return Err(PluginChangeError::Exists(format!(
                "a plugin `{}` exists; replace it with PUT /api/v1/plugins/{}",
                upload.name, upload.name
            )));
        }
        (true, false) => return Err(PluginChangeError::NotFound(upload.name)),
        _ => {}
    }
    let code = upload.code.clone();
    let source = PluginSource {
        name: upload.name.clone(),
        kind: upload.kind,
        bytes: upload.code,
        config: upload.config,
        limits: upload.limits,
        origin: Origin::Api,
    };
    let checking = Arc::clone(catalog);
    let plugin = tokio::task::spawn_blocking(move || checking.check(source))
        .await
        .map_err(|e| PluginChangeError::Invalid(format!("the check failed: {e}")))?
        .map_err(PluginChangeError::Invalid)?;
    let limits = serde_json::to_value(plugin.limits).unwrap_or(Value::Null);
    store
        .put_plugin(
            &plugin.name,
            plugin.kind.as_str(),
            &plugin.sha256,
            &code,
            Value::Object(plugin.config.clone()),
            limits,
        )
        .await?;
    Ok(catalog.insert(plugin))
}

/// Deletes an uploaded plugin, unless a stored pipeline names it.
///
/// # Errors
/// [`PluginChangeError`] naming the problem.
#[tracing::instrument(skip(catalog, store))]
pub async fn delete(
    catalog: &Arc<Catalog>,
    store: &Store,
    name: &str,
) -> Result<(), PluginChangeError> {
    if let Some(p) = catalog.get(name)
        && let Origin::Directory(path) = &p.origin
    {
        return Err(PluginChangeError::Exists(format!(
            "plugin `{name}` comes from the plugin directory ({}); remove the file instead",
            path.display()
        )));
    }
    let projects = store.projects_using_plugin(name).await?;
    if !projects.is_empty() {
        return Err(PluginChangeError::InUse {
            name: name.to_owned(),
            projects,
        });
    }
    if !store.delete_plugin(name).await? && catalog.get(name).is_none() {
        return Err(PluginChangeError::NotFound(name.to_owned()));
    }
    catalog.remove(name);
    Ok(())
}
