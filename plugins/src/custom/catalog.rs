//! The custom plugins of a running gateway, by name.
//!
//! A plugin enters the catalog only once it has been checked: it compiles
//! (WebAssembly: fits the plugin world; Python: loads in the sandbox), its
//! `configure` accepts its default config, and a sample event goes through
//! `process` with one verdict back. Replacing a
//! plugin checks the new version first; a bad one leaves the old running.
//! Each change bumps [`Catalog::generation`], so pipelines built with an
//! older version are rebuilt before their next batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use orrery_core::event::EventBuilder;
use orrery_core::plugin::Plugin;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::PluginLimits;
use super::convert::{apply, to_wit};
use super::python::{PythonCode, PythonHost, PythonStage, TrialError};
use super::wasm::{WasmCode, WasmHost, WasmStage};

/// Longest plugin name.
pub const MAX_NAME_CHARS: usize = 64;

/// What a plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// A WebAssembly component of the `plugin` world.
    Wasm,
    /// Python source defining `process(event)` (and optionally
    /// `configure(config)`), run in the sandbox's Python workers.
    Python,
}

impl PluginKind {
    /// Stable name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wasm => "wasm",
            Self::Python => "python",
        }
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file of the plugin directory.
    Directory(PathBuf),
    /// Uploaded through the admin API (kept in the database).
    Api,
}

/// A plugin as submitted: its bytes, default config and limits.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Its name, as pipelines refer to it.
    pub name: String,
    /// Its language.
    pub kind: PluginKind,
    /// The component (or source) bytes.
    pub bytes: Vec<u8>,
    /// The config a stage gets when it sets none; a stage's own config is
    /// merged over it, key by key.
    pub config: Map<String, Value>,
    /// Its limits.
    pub limits: PluginLimits,
    /// Where it came from.
    pub origin: Origin,
}

/// A checked, loaded plugin.
#[derive(Debug)]
pub struct CustomPlugin {
    /// Its name.
    pub name: String,
    /// Its language.
    pub kind: PluginKind,
    /// Hex SHA-256 of its bytes: its version.
    pub sha256: String,
    /// Size of its bytes.
    pub size: usize,
    /// Default config.
    pub config: Map<String, Value>,
    /// Limits.
    pub limits: PluginLimits,
    /// Where it came from.
    pub origin: Origin,
    code: Code,
}

/// A checked plugin's code, by language.
#[derive(Debug, Clone)]
enum Code {
    Wasm(Arc<WasmCode>),
    Python(Arc<PythonCode>),
}

/// The loaded custom plugins.
#[derive(Debug)]
pub struct Catalog {
    host: Arc<WasmHost>,
    python: Option<PythonHost>,
    plugins: RwLock<BTreeMap<String, Arc<CustomPlugin>>>,
    generation: AtomicU64,
}

/// Checks a plugin name: 1 to 64 of `a-z`, `0-9`, `_` and `-`, starting
/// with a letter.
///
/// # Errors
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin names are 1 to {MAX_NAME_CHARS} of a-z, 0-9, `_` and `-`, starting with a letter; got {name:?}"
        ))
    }
}

impl Catalog {
    /// An empty catalog running WebAssembly on `host`.
    pub fn new(host: Arc<WasmHost>) -> Self {
        Self {
            host,
            python: None,
            plugins: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Runs Python plugins on `python` too (without it they are refused).
    #[must_use]
    pub fn with_python(mut self, python: PythonHost) -> Self {
        self.python = Some(python);
        self
    }

    /// The WebAssembly host.
    pub fn host(&self) -> &Arc<WasmHost> {
        &self.host
    }

    /// The Python host, when Python plugins can run here.
    ///
    /// # Errors
    /// A message saying Python plugins are not available.
    pub fn python(&self) -> Result<&PythonHost, String> {
        self.python.as_ref().ok_or_else(|| {
            "Python plugins are not available here (no Python sandbox was set up for plugins)"
                .to_owned()
        })
    }

    /// Bumped at every change: pipelines built at an older generation are
    /// rebuilt.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<CustomPlugin>> {
        self.read().get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Vec<Arc<CustomPlugin>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<CustomPlugin>>> {
        self.plugins.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `source` (blocking: compiles and runs it). Nothing changes in
    /// the catalog.
    ///
    /// # Errors
    /// A message naming the problem: the name, the limits, the bytes, the
    /// config, or what the sample event met.
    pub fn check(&self, source: PluginSource) -> Result<CustomPlugin, String> {
        check_name(&source.name)?;
        if crate::registry::BUILT_IN.contains(&source.name.as_str()) {
            return Err(format!(
                "`{}` is a built-in plugin: choose another name",
                source.name
            ));
        }
        source
            .limits
            .validate()
            .map_err(|(field, reason)| format!("limits.{field}: {reason}"))?;
        let (code, sha256) = match source.kind {
            PluginKind::Wasm => {
                let code = self.host.compile(&source.bytes)?;
                let sha256 = code.sha256.clone();
                (Code::Wasm(Arc::new(code)), sha256)
            }
            PluginKind::Python => {
                let code = self.python()?.load(&source.bytes)?;
                let sha256 = code.sha256.clone();
                (Code::Python(Arc::new(code)), sha256)
            }
        };
        let plugin = CustomPlugin {
            name: source.name,
            kind: source.kind,
            sha256,
            size: source.bytes.len(),
            config: source.config,
            limits: source.limits,
            origin: source.origin,
            code,
        };
        self.trial(&plugin)?;
        Ok(plugin)
    }

    /// Runs a sample event through a fresh instance with the default config.
    fn trial(&self, plugin: &CustomPlugin) -> Result<(), String> {
        let sample = EventBuilder::new("pageview")
            .field(
                "url",
                "https://example.com/orrery/plugin-check?utm_source=test",
            )
            .field("distinct_id", "plugin-check")
            .field("properties", serde_json::json!({"plan": "pro"}))
            .envelope();
        let events = [to_wit(&sample)];
        let verdicts = match &plugin.code {
            Code::Wasm(code) => {
                self.host
                    .trial(code, &plugin.config, &plugin.limits, &plugin.name, &events)
            }
            Code::Python(code) => {
                // Loading and configuring are the plugin's own checks: their
                // messages stand alone. A kept sample must be well formed.
                match self.python()?.trial(
                    code,
                    &plugin.config,
                    &plugin.limits,
                    &plugin.name,
                    &events,
                ) {
                    Err(TrialError::Start(message)) => return Err(message),
                    Err(TrialError::Batch(message)) => Err(message),
                    Ok(answers) => {
                        let mut scratch = sample.clone();
                        answers
                            .into_iter()
                            .map(|answer| {
                                let verdict = answer?;
                                apply(&mut scratch, &events[0], verdict.clone())?;
                                Ok(verdict)
                            })
                            .collect::<Result<Vec<_>, String>>()
                            .map_err(|reason| format!("malformed answer: {reason}"))
                    }
                }
            }
        }
        .map_err(|message| format!("the sample event failed: {message}"))?;
        if verdicts.len() != 1 {
            return Err(format!(
                "the sample event failed: `process` returned {} verdicts for 1 event",
                verdicts.len()
            ));
        }
        Ok(())
    }

    /// Puts a checked plugin in (replacing one of the same name).
    pub fn insert(&self, plugin: CustomPlugin) -> Arc<CustomPlugin> {
        let plugin = Arc::new(plugin);
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.name.clone(), Arc::clone(&plugin));
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(plugin = %plugin.name, sha256 = %plugin.sha256, "plugin loaded");
        plugin
    }

    /// Takes a plugin out; answers it.
    pub fn remove(&self, name: &str) -> Option<Arc<CustomPlugin>> {
        let removed = self
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if removed.is_some() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!(plugin = %name, "plugin unloaded");
        }
        removed
    }

    /// A pipeline stage of `plugin` with the stage's `config` merged over
    /// the plugin's default, cut off after `timeout`.
    ///
    /// # Errors
    /// The plugin's own message when it refuses the config.
    pub fn stage(
        &self,
        plugin: &CustomPlugin,
        config: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<Arc<dyn Plugin>, String> {
        let mut merged = plugin.config.clone();
        merged.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(match &plugin.code {
            Code::Wasm(code) => Arc::new(WasmStage::new(
                &self.host,
                &plugin.name,
                Arc::clone(code),
                &merged,
                plugin.limits,
                timeout,
            )?),
            Code::Python(code) => Arc::new(PythonStage::new(
                self.python()?,
                &plugin.name,
                code,
                &merged,
                plugin.limits,
                timeout,
            )?),
        })
    }
}

/// A plugin's `NAME.toml` beside its code in the plugin directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// Default config.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Limits.
    #[serde(default)]
    pub limits: PluginLimits,
}

/// Reads a plugin of the directory: `NAME.wasm` or `NAME.py`, and its
/// optional `NAME.toml`.
///
/// # Errors
/// A message naming the file and the problem.
pub fn read_source(path: &Path) -> Result<PluginSource, String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a plugin file name", path.display()))?
        .to_owned();
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("wasm") => PluginKind::Wasm,
        Some("py") => PluginKind::Python,
        _ => {
            return Err(format!(
                "{}: plugins are `.wasm` or `.py` files",
                path.display()
            ));
        }
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let toml_path = path.with_extension("toml");
    let file = match std::fs::read_to_string(&toml_path) {
        Ok(text) => toml::from_str::<PluginFile>(&text)
            .map_err(|e| format!("{}: {e}", toml_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PluginFile::default(),
        Err(e) => return Err(format!("{}: {e}", toml_path.display())),
    };
    Ok(PluginSource {
        name,
        kind,
        bytes,
        config: file.config,
        limits: file.limits,
        origin: Origin::Directory(path.to_owned()),
    })
}
