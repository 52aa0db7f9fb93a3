//! Orrery's tracker (`sdk/js`) in a real browser: headless Chromium loads
//! it from the real gateway (`/sdk/tracker.js`, with its SRI hash) on pages
//! of another origin (`tests/browser/tracker.mjs`), and what it sends is
//! read back from the events API: page views at load and on SPA navigation
//! (pushState, a hash change, popstate; none for replaceState to the same
//! URL), a custom event, identify then reset, outbound link and file
//! download clicks, the event queued when the tab closes (sent by
//! sendBeacon), a batch retried after a 503 with `Retry-After` stored once,
//! no cookie, nothing sent under Do Not Track, Global Privacy Control
//! overridden by the page, opt-out and opt-in. Screenshots are printed
//! (run with `--nocapture`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use orrery_tests::{Api, Server, browser};
use serde_json::{Value, json};

#[tokio::test]
async fn the_tracker_in_chromium_sends_what_a_site_needs() {
    let Some(browser) = browser() else {
        return;
    };
    let server = Server::sqlite(&[]).await;
    let summary = browser.run(
        "tracker.mjs",
        &[
            ("ORRERY_URL", &server.base),
            ("ORRERY_KEY", &server.keys.public_key),
        ],
    );
    assert_eq!(
        summary["ok"], true,
        "the tracker scenario failed: {summary}"
    );
    for shot in summary["screenshots"].as_array().unwrap() {
        eprintln!("screenshot: {shot}");
    }
    let mut stored = server.all_events("", 500).await;
    stored.reverse();
    let site = summary["site"].as_str().unwrap();
    let at = |path: &str| format!("{site}{path}");
    let (anon1, anon2) = (&summary["anon1"], &summary["anon2"]);
    let (session1, session2) = (&summary["session1"], &summary["session2"]);
    assert!(
        anon1.is_string() && anon2.is_string() && anon1 != anon2,
        "{summary}"
    );
    assert!(session1.is_string() && session1 != session2, "{summary}");

    // Every event the browser sent is stored once, under the id it made: a
    // UUIDv7, so the batch refused with a 503 and sent again is one event.
    let sent = summary["events"].as_array().unwrap();
    let sent_ok: Vec<&Value> = sent.iter().filter(|e| e["status"] == 200).collect();
    assert!(
        sent.iter().any(|e| e["status"] == 503),
        "the tap refused the first batch: {summary}"
    );
    let shop: Vec<&Value> = stored
        .iter()
        .filter(|e| e["url"].as_str().unwrap().starts_with(&at("/shop/")))
        .collect();
    for e in &shop {
        let id = e["id"].as_str().unwrap();
        assert_eq!(&id[14..15], "7", "a UUIDv7 made in the browser: {e}");
        assert_eq!(
            sent_ok.iter().filter(|s| s["id"] == id).count(),
            1,
            "{id} sent once with a 200"
        );
    }
    let names: Vec<&str> = shop.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "pageview",
            "pageview",
            "pageview",
            "pageview",
            "add_to_cart",
            "identify",
            "after_identify",
            "after_reset",
            "outbound_link",
            "file_download",
            "last_words"
        ],
        "{shop:#?}"
    );
    let urls: Vec<&str> = shop[..4]
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            at("/shop/"),
            at("/shop/item/1"),
            at("/shop/item/1#reviews"),
            at("/shop/item/1")
        ]
    );
    for e in &shop[..7] {
        assert_eq!(e["session_id"], *session1, "{e}");
        assert!(
            e["user_agent"].as_str().unwrap().contains("Chrome/"),
            "the browser's own user agent: {e}"
        );
    }
    assert_eq!(shop[4]["properties"], json!({"sku": "A1", "qty": 2}));
    assert_eq!(shop[4]["distinct_id"], *anon1);
    assert_eq!(
        (
            shop[5]["distinct_id"].clone(),
            shop[5]["properties"].clone()
        ),
        (
            json!("user-42"),
            json!({"plan": "pro", "anonymous_id": anon1})
        )
    );
    assert_eq!(shop[6]["distinct_id"], "user-42");
    assert_eq!(
        (
            shop[7]["distinct_id"].clone(),
            shop[7]["session_id"].clone()
        ),
        (anon2.clone(), session2.clone()),
        "after reset: a new anonymous visitor and session"
    );
    assert_eq!(
        shop[8]["properties"]["url"],
        "https://elsewhere.example/pricing"
    );
    assert_eq!(shop[9]["properties"]["url"], at("/files/report.pdf"));
    assert_eq!(shop[10]["distinct_id"], *anon2);
    assert_eq!(
        summary["beacon"],
        json!({"contentType": "text/plain;charset=UTF-8", "status": 200, "afterClose": true}),
        "the last event went by sendBeacon as the tab closed"
    );
    assert_eq!(summary["cookies"], json!({"document": "", "jar": 0}));

    // Do Not Track: nothing. GPC overridden by the page; opt-out honoured.
    assert!(
        !stored
            .iter()
            .any(|e| e["url"].as_str().unwrap().starts_with(&at("/dnt/"))),
        "{stored:#?}"
    );
    let gpc: Vec<&str> = stored
        .iter()
        .filter(|e| e["url"].as_str().unwrap().starts_with(&at("/gpc/")))
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(gpc, ["pageview", "after_opt_in"], "{stored:#?}");
    assert_eq!(stored.len(), shop.len() + gpc.len(), "nothing else stored");
}
