//! Drop-in compatibility in a real browser: headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/browser/`) opens pages
//! served from another origin than Orrery's that run the published
//! `posthog-js` and `plausible-tracker` packages pointed at the real binary,
//! as a site would. Checks that what the trackers send is stored once each,
//! as the right Orrery events: posthog-js's `$pageview` (as `pageview`, with
//! the page's URL and referrer, posthog-js's distinct and session ids and
//! `$lib`), a custom event with its properties, `$identify`, the `$pageleave`
//! and batch flushed when the tab closes, each under posthog-js's own uuid,
//! through a PostHog token of `compat.posthog_tokens`; plausible-tracker's
//! pageview and custom event with its props, through
//! `compat.plausible_domains`. Also that every request the trackers make to
//! Orrery (capture, `/flags/`, remote config) is answered 2xx across origins
//! and the page logs no error.
//!
//! The scenarios are `tests/browser/posthog.mjs` and `plausible.mjs` (on
//! `tests/browser/harness.mjs`); each prints one JSON summary line, read
//! here. Screenshots go to `$ORRERY_SCREENSHOTS`, else
//! `<target>/tmp/browser-screenshots/`; their paths are printed (run with
//! `--nocapture`).
//!
//! Skipped, saying why, only when there is no `node`/`npm`, or no Chromium
//! and `apt-get install chromium` fails (`orrery_tests::browser`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::collections::BTreeSet;

use orrery_tests::{Api, Server, browser, env_map};
use serde_json::{Value, json};

/// The one event of `events` named `name`.
fn one<'a>(events: &[&'a Value], name: &str, context: &str) -> &'a Value {
    let found: Vec<&&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(
        found.len(),
        1,
        "{context}: expected one `{name}` event, stored: {events:#?}"
    );
    found[0]
}

/// The name Orrery stores a PostHog event under.
fn stored_name(posthog_event: &str) -> &str {
    if posthog_event == "$pageview" {
        "pageview"
    } else {
        posthog_event
    }
}

#[tokio::test]
async fn posthog_js_in_chromium_delivers_its_events_to_orrery() {
    let Some(browser) = browser() else {
        return;
    };
    let mut server = Server::sqlite(&[]).await;
    let tokens = env_map(&[("phc_test", &server.keys.project_id)]);
    server.restart_with_env(&[("ORRERY_COMPAT__POSTHOG_TOKENS", &tokens)]);

    let summary = browser.run(
        "posthog.mjs",
        &[
            ("ORRERY_URL", &server.base),
            ("ORRERY_POSTHOG_TOKEN", "phc_test"),
        ],
    );
    let Some(visitors) = summary["visitors"].as_array() else {
        panic!("the posthog scenario failed: {summary}");
    };
    assert_eq!(visitors.len(), 2, "{summary}");
    let email = summary["email"].as_str().unwrap();
    let stored = server.all_events("", 500).await;

    // Orrery keeps an event's id unique: a uuid posthog-js sent twice (a
    // retry) would be one event, so "stored once" is checked per visitor
    // below, as exactly the events posthog-js captured.
    let ids: BTreeSet<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), stored.len(), "ids repeat: {stored:#?}");

    let mut gaps = Vec::new();
    for v in visitors {
        let name = v["visitor"].as_str().unwrap();
        let url = v["url"].as_str().unwrap();
        let anon = v["distinct_id"].as_str().unwrap();
        let session = v["session_id"].as_str().unwrap();
        assert!(!anon.is_empty() && !session.is_empty(), "{v}");
        eprintln!("posthog {name}: screenshot {}", v["screenshot"]);
        let mine: Vec<&Value> = stored.iter().filter(|e| e["url"] == url).collect();
        let ctx = format!("posthog-js visitor {name} ({url})");

        let view = one(&mine, "pageview", &ctx);
        assert_eq!(view["distinct_id"], anon, "{ctx}: {view:#}");
        assert_eq!(view["session_id"], session, "{ctx}: $session_id: {view:#}");
        assert_eq!(view["properties"]["$lib"], "web", "{ctx}: {view:#}");
        assert_eq!(
            view["referrer"], v["referrer"],
            "{ctx}: $referrer: {view:#}"
        );
        assert!(
            view["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("Chrome/")),
            "{ctx}: the browser's User-Agent: {view:#}"
        );
        let props = view["properties"].as_object().unwrap();
        for consumed in ["$current_url", "$session_id", "$referrer", "token", "$ip"] {
            assert!(
                !props.contains_key(consumed),
                "{ctx}: {consumed} kept: {view:#}"
            );
        }

        let signup = one(&mine, "signup_clicked", &ctx);
        assert_eq!(signup["properties"]["plan"], "pro", "{ctx}: {signup:#}");
        assert_eq!(signup["distinct_id"], anon, "{ctx}: {signup:#}");

        let identify = one(&mine, "$identify", &ctx);
        assert_eq!(identify["distinct_id"], "user-42", "{ctx}: {identify:#}");
        assert_eq!(
            identify["properties"]["$anon_distinct_id"], anon,
            "{ctx}: {identify:#}"
        );
        assert_eq!(
            identify["properties"]["$set"]["email"], email,
            "{ctx}: {identify:#}"
        );

        // Sent while the tab closed: by sendBeacon (and, batched, with the
        // queue posthog-js still held).
        let leave = one(&mine, "$pageleave", &ctx);
        assert_eq!(leave["distinct_id"], "user-42", "{ctx}: {leave:#}");

        for e in &mine {
            assert_eq!(e["session_id"], session, "{ctx}: one session: {e:#}");
        }

        // Each event posthog-js captured is stored once, under its uuid,
        // and nothing else is stored for the page.
        let captured = v["captured"].as_array().unwrap();
        for c in captured {
            let uuid = c["uuid"].as_str().unwrap();
            let event = stored_name(c["event"].as_str().unwrap());
            let same: Vec<&&Value> = mine.iter().filter(|e| e["id"] == uuid).collect();
            assert_eq!(
                same.len(),
                1,
                "{ctx}: posthog-js's {c} stored {} time(s)",
                same.len()
            );
            assert_eq!(same[0]["event"], event, "{ctx}: {c}: {:#}", same[0]);
        }
        assert_eq!(
            mine.len(),
            captured.len(),
            "{ctx}: stored {:?}, posthog-js captured {captured:?}",
            mine.iter()
                .map(|e| (&e["event"], &e["id"]))
                .collect::<Vec<_>>()
        );
        for must in ["$pageview", "signup_clicked", "$identify", "$pageleave"] {
            assert!(
                captured.iter().any(|c| c["event"] == must),
                "{ctx}: {captured:?}"
            );
        }

        // The endpoints posthog-js used: capture, flags and remote config
        // (`/array/{token}/config`, or its script form `config.js`), every
        // capture answered 200.
        let requests = v["requests"].as_array().unwrap();
        for r in requests {
            eprintln!(
                "posthog {name}: {} {} [{}, {}, {} item(s)] -> {}{}",
                r["method"].as_str().unwrap_or("?"),
                r["path"].as_str().unwrap_or("?"),
                r["contentType"].as_str().unwrap_or("-"),
                r["encoding"].as_str().unwrap_or("-"),
                r["items"],
                r["status"],
                if r["afterClose"] == true {
                    " (tab closing)"
                } else {
                    ""
                },
            );
        }
        let paths: BTreeSet<&str> = requests
            .iter()
            .map(|r| r["path"].as_str().unwrap())
            .collect();
        for must in ["/e/", "/flags/"] {
            assert!(paths.contains(must), "{ctx}: no {must} among {paths:?}");
        }
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("/array/phc_test/config")),
            "{ctx}: no remote config among {paths:?}"
        );
        for r in requests.iter().filter(|r| r["path"] == "/e/") {
            assert_eq!(r["status"], 200, "{ctx}: {r}");
        }
        // Answers outside 2xx, failed requests, console errors: checked
        // last.
        for p in v["problems"].as_array().unwrap() {
            gaps.push(format!("{name}: {}", p.as_str().unwrap()));
        }

        // Autocapture is on by default in posthog-js (and on PostHog):
        // the click on "Sign up" is an $autocapture.
        if !mine
            .iter()
            .any(|e| e["event"] == "$autocapture" && e["properties"]["$event_type"] == "click")
        {
            gaps.push(format!(
                "{name}: no $autocapture of the click: posthog-js autocaptures only once the \
                 remote config (/array/{{token}}/config, /flags) says `autocapture_opt_out: false`"
            ));
        }
    }

    let captured: usize = visitors
        .iter()
        .map(|v| v["captured"].as_array().unwrap().len())
        .sum();
    assert_eq!(stored.len(), captured, "nothing else stored: {stored:#?}");

    // Last, so that the checks above run whatever the answer to these:
    // every request to Orrery answered 2xx, no error in the page,
    // autocapture on.
    if summary["ok"] != json!(true) && gaps.is_empty() {
        gaps.push(format!("the scenario failed: {}", summary["error"]));
    }
    assert!(
        gaps.is_empty(),
        "posthog-js in a browser met {} problem(s):\n{}",
        gaps.len(),
        gaps.join("\n")
    );
}

#[tokio::test]
async fn plausible_tracker_in_chromium_delivers_its_events_to_orrery() {
    let Some(browser) = browser() else {
        return;
    };
    let mut server = Server::sqlite(&[]).await;
    let domains = env_map(&[("site.example", &server.keys.project_id)]);
    server.restart_with_env(&[("ORRERY_COMPAT__PLAUSIBLE_DOMAINS", &domains)]);

    let summary = browser.run(
        "plausible.mjs",
        &[
            ("ORRERY_URL", &server.base),
            ("ORRERY_PLAUSIBLE_DOMAIN", "site.example"),
        ],
    );
    let Some(url) = summary["url"].as_str() else {
        panic!("the plausible scenario failed: {summary}");
    };
    eprintln!("plausible: screenshot {}", summary["screenshot"]);
    let stored = server.all_events("", 500).await;
    let mine: Vec<&Value> = stored.iter().filter(|e| e["url"] == url).collect();
    let ctx = format!("plausible-tracker ({url})");

    let view = one(&mine, "pageview", &ctx);
    assert_eq!(view["referrer"], summary["referrer"], "{ctx}: {view:#}");
    assert_eq!(
        view["properties"]["domain"], "site.example",
        "{ctx}: {view:#}"
    );
    assert_eq!(view["properties"]["screen_width"], 1280, "{ctx}: {view:#}");
    assert!(
        view["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Chrome/")),
        "{ctx}: the browser's User-Agent: {view:#}"
    );
    let signup = one(&mine, "Signup", &ctx);
    assert_eq!(signup["properties"]["plan"], "pro", "{ctx}: {signup:#}");
    assert_eq!(signup["referrer"], summary["referrer"], "{ctx}: {signup:#}");
    assert_eq!(mine.len(), 2, "{ctx}: {mine:#?}");
    assert_eq!(stored.len(), 2, "nothing else stored: {stored:#?}");

    let requests = summary["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{summary}");
    for r in requests {
        assert_eq!(
            (
                r["method"].clone(),
                r["path"].clone(),
                r["contentType"].clone(),
                r["status"].clone()
            ),
            (
                json!("POST"),
                json!("/api/event"),
                json!("text/plain"),
                json!(202)
            ),
            "{r}"
        );
    }
    assert_eq!(
        summary["ok"], true,
        "plausible-tracker met problems: {}",
        summary["error"]
    );
}
