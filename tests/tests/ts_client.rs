//! The TypeScript client (`sdk/ts`, openapi-typescript's types for
//! openapi-fetch): its committed generated types are what the generator
//! makes from `openapi/openapi.json`, and the client works against a running
//! gateway (`npm test` type-checks the sources and a typed test, then
//! creates a key, sends a batch with it, reads the events back and sees a
//! bad key's 401 as openapi-fetch's `error`).
//!
//! Skipped, with a printed reason, when `node` or `npm` is not on PATH. The
//! locked dependencies are installed by `npm_ready` (`npm ci`).

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::path::PathBuf;
use std::process::Command;

use orrery_tests::{Server, npm_ready, repo};

fn sdk_dir() -> PathBuf {
    repo().join("sdk/ts")
}

/// Runs `npm ARGS` in `sdk/ts` with `envs`: success, and stdout then stderr.
fn npm(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(sdk_dir())
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .output()
        .unwrap_or_else(|e| panic!("run npm {args:?}: {e}"));
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), log)
}

#[test]
fn generated_types_are_current() {
    if npm_ready("sdk/ts").is_none() {
        return;
    }
    // `openapi-typescript ... --check`: regenerates in memory and compares
    // with the committed src/schema.ts.
    let (ok, log) = npm(&["run", "check"], &[]);
    if !ok && log.contains("not up-to-date") {
        panic!("sdk/ts is stale: run `npm run generate` in sdk/ts\n{log}");
    }
    assert!(ok, "`npm run check` in sdk/ts failed:\n{log}");
}

#[tokio::test]
async fn generated_client_works_against_the_gateway() {
    if npm_ready("sdk/ts").is_none() {
        return;
    }
    let server = Server::sqlite(&[]).await;
    let (ok, log) = npm(
        &["test"],
        &[
            ("ORRERY_URL", &server.base),
            ("ORRERY_ADMIN_KEY", &server.keys.secret_key),
            ("ORRERY_PROJECT_ID", &server.keys.project_id),
        ],
    );
    assert!(ok, "`npm test` in sdk/ts failed:\n{log}");
    // node --test's summary (TAP or spec reporter): every test passed, and
    // there were some.
    let count = |what: &str| -> Option<u32> {
        log.lines()
            .find_map(|l| l.trim_start_matches(['#', 'ℹ', ' ']).strip_prefix(what))
            .and_then(|n| n.trim().parse().ok())
    };
    assert_eq!(count("fail "), Some(0), "{log}");
    assert_eq!(count("skipped "), Some(0), "{log}");
    assert!(count("pass ").is_some_and(|n| n >= 2), "{log}");
}
