//! Node packages the tests run (the tracker's build, the TypeScript
//! client, the browser tests): each directory's `node_modules` installed
//! once per test process with `npm ci`, from its committed lock file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Whether `node` and `npm` run here.
pub fn node_available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `dir` (relative to the repository) with its `node_modules` installed by
/// `npm ci` when absent or older than its `package-lock.json`; `None`,
/// with the reason printed, when Node is not installed.
///
/// # Panics
/// When `npm ci` fails (the registry unreachable, a bad lock file).
pub fn npm_ready(dir: &str) -> Option<PathBuf> {
    static DONE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    if !node_available() {
        eprintln!("skipped: node and npm are not installed (Debian: apt-get install nodejs npm)");
        return None;
    }
    let path = crate::repo().join(dir);
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let done = done.get_or_insert_with(HashSet::new);
    if done.contains(&path) {
        return Some(path);
    }
    if !installed(&path) {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&path)
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "npm ci in {dir} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.insert(path.clone());
    Some(path)
}

/// Whether `node_modules` holds what the lock file lists (npm writes its
/// own copy of the lock file there after an install).
fn installed(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    }
}
