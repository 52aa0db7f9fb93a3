//! The plugin directory (`pipeline.plugin_directory`): its plugins
//! (`NAME.wasm` components and `NAME.py` Python plugins) are
//! loaded at start and the directory is scanned every
//! `pipeline.plugin_watch_ms`, so that an added, changed or removed file
//! takes effect without a restart. A file that does not pass the checks is
//! logged with the reason and, when it replaced a working version, that
//! version keeps running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use orrery_plugins::custom::Catalog;
use orrery_plugins::custom::catalog::{Origin, read_source};
use tracing::{info, warn};

/// What identifies a version of a file without reading it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A watched plugin directory.
#[derive(Debug)]
pub struct PluginDirectory {
    dir: PathBuf,
    /// Each plugin file's (`.wasm`, `.py`) stamp and its `.toml`'s, as
    /// last loaded (or refused).
    seen: BTreeMap<PathBuf, (Stamp, Stamp)>,
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Plugins loaded or replaced.
    pub loaded: Vec<String>,
    /// Plugins unloaded (their file is gone).
    pub removed: Vec<String>,
    /// Files refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

impl PluginDirectory {
    /// A directory not scanned yet.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            seen: BTreeMap::new(),
        }
    }

    /// Loads what changed since the last scan into `catalog` (blocking:
    /// checking a plugin compiles and runs it).
    pub fn scan(&mut self, catalog: &Catalog) -> Scan {
        let mut scan = Scan::default();
        let mut present = BTreeMap::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "wasm" || e == "py") {
                        let stamps = (stamp(&path), stamp(&path.with_extension("toml")));
                        present.insert(path, stamps);
                    }
                }
            }
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "cannot read the plugin directory");
                return scan;
            }
        }
        for (path, stamps) in &present {
            if self.seen.get(path) == Some(stamps) {
                continue;
            }
            self.seen.insert(path.clone(), *stamps);
            let checked = read_source(path).and_then(|source| catalog.check(source));
            match checked {
                Ok(plugin) => {
                    let name = plugin.name.clone();
                    if let Some(existing) = catalog.get(&name)
                        && existing.origin == Origin::Api
                    {
                        let reason = format!(
                            "a plugin `{name}` was uploaded through the API; the directory's \
                             file of that name replaces it"
                        );
                        warn!(file = %path.display(), "{reason}");
                    }
                    catalog.insert(plugin);
                    scan.loaded.push(name);
                }
                Err(reason) => {
                    warn!(file = %path.display(), %reason, "plugin file refused; a loaded version keeps running");
                    scan.refused.push((path.clone(), reason));
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !present.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            self.seen.remove(&path);
            for plugin in catalog.list() {
                if plugin.origin == Origin::Directory(path.clone()) {
                    catalog.remove(&plugin.name);
                    scan.removed.push(plugin.name.clone());
                }
            }
        }
        if !scan.loaded.is_empty() || !scan.removed.is_empty() {
            info!(loaded = ?scan.loaded, removed = ?scan.removed, dir = %self.dir.display(), "plugin directory scanned");
        }
        scan
    }
}

/// Scans `directory` every `every` in the background.
pub fn spawn_watcher(catalog: Arc<Catalog>, directory: PluginDirectory, every: Duration) {
    let directory = Arc::new(std::sync::Mutex::new(directory));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (catalog, directory) = (Arc::clone(&catalog), Arc::clone(&directory));
            let done = tokio::task::spawn_blocking(move || {
                directory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .scan(&catalog);
            })
            .await;
            if let Err(error) = done {
                warn!(%error, "plugin directory scan failed");
            }
        }
    });
}
