//! Real trackers in a real browser: headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/browser/`) running
//! the scenario scripts of `tests/browser/` against a real Orrery. Each
//! scenario prints one JSON summary line, which [`Browser::run`] answers.
//! Screenshots go to `$ORRERY_SCREENSHOTS`, else
//! `<target>/tmp/browser-screenshots/`; their paths are printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Where the scenarios are, and the browser they drive.
#[derive(Debug)]
pub struct Browser {
    dir: PathBuf,
    chromium: PathBuf,
}

/// The browser, set up once per process (the packages of `tests/browser`
/// installed, Chromium found or installed); `None`, saying why, when there
/// is no Node or no Chromium can be installed.
pub fn browser() -> Option<&'static Browser> {
    static READY: OnceLock<Result<Browser, String>> = OnceLock::new();
    match READY.get_or_init(prepare) {
        Ok(b) => Some(b),
        Err(why) => {
            eprintln!("SKIPPED (no browser): {why}");
            None
        }
    }
}

/// Finds Chromium (`$ORRERY_CHROMIUM`, else `/usr/bin/chromium`),
/// installing Debian's package when it is missing.
fn chromium() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ORRERY_CHROMIUM") {
        return if Path::new(&p).exists() {
            Ok(PathBuf::from(p))
        } else {
            Err(format!("ORRERY_CHROMIUM={p} does not exist"))
        };
    }
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "no {}: trying `apt-get install -y chromium`",
        path.display()
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["install", "-y", "-q", "chromium"])
        || (apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "chromium"]));
    if installed && path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "no {} and `apt-get install -y chromium` failed (not root, or no package source?)",
            path.display()
        ))
    }
}

fn prepare() -> Result<Browser, String> {
    let dir = crate::npm_ready("tests/browser").ok_or("no `node` or `npm` on PATH")?;
    let chromium = chromium()?;
    Ok(Browser { dir, chromium })
}

/// The screenshot directory: `$ORRERY_SCREENSHOTS`, else
/// `<target>/tmp/browser-screenshots`.
fn screenshots() -> PathBuf {
    std::env::var("ORRERY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let exe = std::env::current_exe().unwrap_or_default();
            // target/<profile>/deps/<test> -> target/tmp
            let target = exe.ancestors().nth(3).unwrap_or(Path::new("."));
            target.join("tmp/browser-screenshots")
        })
}

impl Browser {
    /// Runs `node tests/browser/<script>` with `env` and answers its JSON
    /// summary line (`ok` false when the scenario failed; its log is
    /// printed).
    ///
    /// # Panics
    /// When the scenario prints no summary, or its exit status and its
    /// summary disagree.
    pub fn run(&self, script: &str, env: &[(&str, &str)]) -> Value {
        let started = std::time::Instant::now();
        let out = Command::new("node")
            .arg(self.dir.join(script))
            .current_dir(&self.dir)
            .env("ORRERY_CHROMIUM", &self.chromium)
            .env("ORRERY_SCREENSHOTS", screenshots())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "--- node {script} ({:.1} s, {}) ---\n{stderr}",
            started.elapsed().as_secs_f64(),
            out.status
        );
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let summary: Value = line
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("node {script} printed no JSON summary: stdout {stdout}"));
        assert_eq!(
            summary["ok"].as_bool(),
            Some(out.status.success()),
            "the exit status and the summary disagree: {summary}"
        );
        summary
    }
}
