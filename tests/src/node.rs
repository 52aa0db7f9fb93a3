//! Node packages the tests run (the tracker's build, the TypeScript
//! client, the browser tests): each directory's `node_modules` installed
//! with `npm ci` from its committed lock file when it does not hold
//! exactly what the lock file locks.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Whether `node` and `npm` are on PATH. A tool that is there but does not
/// run is a failure, not a reason to skip.
///
/// # Panics
/// When `node --version` or `npm --version` fails.
pub fn node_available() -> bool {
    for tool in ["node", "npm"] {
        match Command::new(tool).arg("--version").output() {
            Ok(out) => assert!(
                out.status.success(),
                "`{tool} --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => return false,
            Err(e) => panic!("run `{tool} --version`: {e}"),
        }
    }
    true
}

/// `dir` (relative to the repository) with its dependencies installed as
/// locked; `None`, with the reason printed, when Node is not installed.
/// Tests in threads or processes install one at a time: an exclusive lock
/// on `package-lock.json` (which `npm ci` never writes).
///
/// # Panics
/// When `npm ci` fails (the registry unreachable, a bad lock file).
pub fn npm_ready(dir: &str) -> Option<PathBuf> {
    if !node_available() {
        eprintln!("skipped: `node` or `npm` is not on PATH (install Node 20+ with npm)");
        return None;
    }
    let path = crate::repo().join(dir);
    let lock = std::fs::File::open(path.join("package-lock.json"))
        .unwrap_or_else(|e| panic!("{dir}/package-lock.json is committed: {e}"));
    lock.lock().unwrap();
    if !installed_as_locked(&path) {
        let out = Command::new("npm")
            // No install scripts: none of the packages needs one
            // (esbuild finds its binary package without its own), and
            // Playwright's browsers are not downloaded (Debian's is used).
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(&path)
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "`npm ci` in {dir} failed (is the npm registry reachable?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            installed_as_locked(&path),
            "after `npm ci`, {dir}/node_modules/.package-lock.json differs from package-lock.json"
        );
    }
    lock.unlock().unwrap();
    Some(path)
}

/// Whether `node_modules` holds exactly what `package-lock.json` locks
/// (npm's record of the installed tree, `node_modules/.package-lock.json`,
/// lists the same packages as the lock file, without the root and without
/// the optional ones of other platforms, such as esbuild's binaries).
fn installed_as_locked(dir: &Path) -> bool {
    let read = |path: PathBuf| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let (Some(locked), Some(installed)) = (
        read(dir.join("package-lock.json")),
        read(dir.join("node_modules/.package-lock.json")),
    ) else {
        return false;
    };
    let (Some(locked), Some(installed)) = (
        locked["packages"].as_object(),
        installed["packages"].as_object(),
    ) else {
        return false;
    };
    let all_there = locked
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .all(|(name, pkg)| match installed.get(name) {
            Some(have) => have == pkg,
            None => pkg["optional"] == true,
        });
    all_there && installed.keys().all(|name| locked.contains_key(name))
}
