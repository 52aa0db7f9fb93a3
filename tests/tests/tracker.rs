//! The browser tracker (`sdk/js`): the committed build is what the build
//! makes of the source (so Orrery builds without Node and the file it
//! serves is the reviewed one), and the gateway serves it with its cache
//! headers, ETag and CORS to any origin. Its behaviour in a real browser
//! is in `tracker_browser.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::process::Command;

use orrery_tests::{Api, Server, npm_ready, repo};

#[test]
fn the_committed_build_is_what_the_source_makes() {
    let Some(dir) = npm_ready("sdk/js") else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .arg("build.mjs")
        .arg("--outdir")
        .arg(out_dir.path())
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node build.mjs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "tracker.min.js",
        "tracker.mjs",
        "tracker.d.ts",
        "tracker.min.js.sri",
    ] {
        let built = std::fs::read(out_dir.path().join(file)).unwrap();
        let committed = std::fs::read(dir.join("dist").join(file)).unwrap();
        assert!(
            built == committed,
            "sdk/js/dist/{file} is not what the build makes of sdk/js/src: \
             run `cd sdk/js && npm ci && npm run build`, then update the SRI hash in README.md"
        );
    }
}

#[tokio::test]
async fn the_gateway_serves_the_tracker_with_cache_headers_to_any_origin() {
    let server = Server::sqlite(&[]).await;
    let committed = std::fs::read(repo().join("sdk/js/dist/tracker.min.js")).unwrap();
    for path in ["/sdk/tracker.js", "/tracker.js"] {
        let a = server
            .send("GET", path, &[("Origin", "https://shop.example")], None)
            .await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.body, committed, "{path} serves the committed build");
        assert_eq!(
            a.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(a.header("cache-control"), Some("public, max-age=604800"));
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://shop.example"),
            "a page may load it with integrity and crossorigin"
        );
        assert!(
            a.header("cross-origin-resource-policy").is_none(),
            "another site's page must be able to load it"
        );
        let etag = a.header("etag").unwrap().to_owned();
        let again = server
            .send("GET", path, &[("If-None-Match", &etag)], None)
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        let stale = server
            .send("GET", path, &[("If-None-Match", "\"other\"")], None)
            .await;
        assert_eq!(stale.status, 200, "{path}");
    }
    let a = server.send("POST", "/sdk/tracker.js", &[], None).await;
    assert_eq!(a.status, 405);
}
