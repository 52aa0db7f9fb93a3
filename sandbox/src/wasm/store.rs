//! [`ModuleStore`]: WebAssembly programs uploaded once and run many times
//! by id, persisted in a directory.
//!
//! The id is the SHA-256 of the uploaded bytes (uploading the same bytes
//! twice gives the same id). Each module is two files in the directory:
//! `<id>.wasm` (the bytes as uploaded, binary or WAT) and `<id>.json` (its
//! [`ModuleInfo`]); both are written to a temporary name and renamed, so a
//! crash leaves either the whole module or nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{WasmExecution, WasmKind, WasmRequest, WasmRuntime};
use crate::SandboxError;
use crate::result::ExecutionResult;

/// Configuration of a [`ModuleStore`].
#[derive(Debug, Clone)]
pub struct ModuleStoreConfig {
    /// Where modules are kept (created if missing).
    pub dir: PathBuf,
    /// Largest module accepted.
    pub max_module_bytes: u64,
    /// Largest total size of all modules.
    pub max_total_bytes: u64,
}

impl ModuleStoreConfig {
    /// Defaults (8 MiB per module, 256 MiB in all) in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_module_bytes: 8 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What is known about a stored module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Hex SHA-256 of the bytes; the id to run it by.
    pub id: String,
    /// Core module or component.
    pub kind: WasmKind,
    /// Size in bytes.
    pub size: u64,
    /// A name given at upload, for people.
    pub name: Option<String>,
    /// Upload time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// Uploaded modules, validated at upload, persisted across restarts.
#[derive(Debug)]
pub struct ModuleStore {
    config: ModuleStoreConfig,
    runtime: WasmRuntime,
    index: Mutex<HashMap<String, ModuleInfo>>,
    // One upload at a time past validation, so the size check and the
    // write cannot interleave.
    writing: tokio::sync::Mutex<()>,
}

impl ModuleStore {
    /// Opens (or creates) the store in `config.dir`, reading what is there.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(config: ModuleStoreConfig, runtime: WasmRuntime) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(SandboxError::io("creating the module directory"))?;
        let mut index = HashMap::new();
        for entry in std::fs::read_dir(&config.dir)
            .map_err(SandboxError::io("reading the module directory"))?
        {
            let path = entry
                .map_err(SandboxError::io("reading the module directory"))?
                .path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_info(&path) {
                Some(info) if valid_id(&info.id) && wasm_path(&config.dir, &info.id).exists() => {
                    index.insert(info.id.clone(), info);
                }
                _ => tracing::warn!(path = %path.display(), "ignoring an unreadable module entry"),
            }
        }
        Ok(Self {
            config,
            runtime,
            index: Mutex::new(index),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Validates, compiles and stores `bytes`.
    ///
    /// # Errors
    /// [`SandboxError::ModuleTooLarge`], [`SandboxError::StoreFull`],
    /// [`SandboxError::InvalidModule`] naming the problem (garbage bytes,
    /// no `_start` / `wasi:cli/run`...), or an I/O error.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        name: Option<String>,
    ) -> Result<ModuleInfo, SandboxError> {
        let size = bytes.len() as u64;
        if size > self.config.max_module_bytes {
            return Err(SandboxError::ModuleTooLarge {
                size,
                limit: self.config.max_module_bytes,
            });
        }
        let runtime = self.runtime.clone();
        let (compiled, bytes) =
            tokio::task::spawn_blocking(move || runtime.compile(&bytes).map(|c| (c, bytes)))
                .await
                .map_err(|e| SandboxError::Engine(format!("compile task failed: {e}")))??;
        let _writing = self.writing.lock().await;
        if let Some(existing) = self.index.lock().expect("index lock").get(&compiled.sha256) {
            return Ok(existing.clone());
        }
        let total: u64 = self
            .index
            .lock()
            .expect("index lock")
            .values()
            .map(|m| m.size)
            .sum();
        if total + size > self.config.max_total_bytes {
            return Err(SandboxError::StoreFull {
                limit: self.config.max_total_bytes,
            });
        }
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = ModuleInfo {
            id: compiled.sha256.clone(),
            kind: compiled.kind(),
            size,
            name,
            created_at,
        };
        let dir = self.config.dir.clone();
        let to_write = info.clone();
        tokio::task::spawn_blocking(move || write_module(&dir, &to_write, &bytes))
            .await
            .map_err(|e| SandboxError::Engine(format!("write task failed: {e}")))?
            .map_err(SandboxError::io("writing the module"))?;
        self.index
            .lock()
            .expect("index lock")
            .insert(info.id.clone(), info.clone());
        Ok(info)
    }

    /// Every stored module, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<ModuleInfo> {
        let mut all: Vec<ModuleInfo> = self
            .index
            .lock()
            .expect("index lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// The module with this id.
    ///
    /// # Errors
    /// [`SandboxError::ModuleNotFound`].
    pub fn get(&self, id: &str) -> Result<ModuleInfo, SandboxError> {
        self.index
            .lock()
            .expect("index lock")
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::ModuleNotFound(id.into()))
    }

    /// Removes a module (and its compiled code from the cache).
    ///
    /// # Errors
    /// [`SandboxError::ModuleNotFound`], or an I/O error.
    pub fn delete(&self, id: &str) -> Result<(), SandboxError> {
        let removed = self.index.lock().expect("index lock").remove(id);
        if removed.is_none() {
            return Err(SandboxError::ModuleNotFound(id.into()));
        }
        std::fs::remove_file(info_path(&self.config.dir, id))
            .map_err(SandboxError::io("deleting the module"))?;
        std::fs::remove_file(wasm_path(&self.config.dir, id))
            .map_err(SandboxError::io("deleting the module"))?;
        self.runtime.forget(id);
        Ok(())
    }

    /// Runs the module with this id to the end (compiling it only if it is
    /// not cached).
    ///
    /// # Errors
    /// [`SandboxError::ModuleNotFound`], or an I/O error reading it.
    pub async fn run(
        &self,
        id: &str,
        request: WasmRequest,
    ) -> Result<ExecutionResult, SandboxError> {
        Ok(self.start(id, request).await?.wait().await)
    }

    /// Starts the module with this id; the handle streams its output.
    ///
    /// # Errors
    /// As [`Self::run`].
    pub async fn start(
        &self,
        id: &str,
        request: WasmRequest,
    ) -> Result<WasmExecution, SandboxError> {
        self.get(id)?;
        if let Some(compiled) = self.runtime.cached(id) {
            return Ok(self.runtime.spawn(compiled, request));
        }
        let bytes = tokio::fs::read(wasm_path(&self.config.dir, id))
            .await
            .map_err(SandboxError::io("reading the module"))?;
        self.runtime.start(bytes, request).await
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn wasm_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.wasm"))
}

fn info_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn read_info(path: &Path) -> Option<ModuleInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Bytes first, then the info that makes the module visible; each through a
/// temporary file and a rename.
fn write_module(dir: &Path, info: &ModuleInfo, bytes: &[u8]) -> std::io::Result<()> {
    let write = |path: PathBuf, data: &[u8]| -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, data)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write(wasm_path(dir, &info.id), bytes)?;
    write(
        info_path(dir, &info.id),
        &serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?,
    )
}
