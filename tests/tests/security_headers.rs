//! The security headers of every kind of answer, through the real binary:
//! the API's (nothing may run or frame it), the docs page's CSP (Swagger UI
//! still renders under it, in a real Chromium), the public endpoints' (no
//! CORP, any origin), and HSTS only on requests that a trusted proxy says
//! came over HTTPS.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use orrery_tests::{Server, browser, client};

async fn headers(
    server: &Server,
    path: &str,
    extra: &[(&str, &str)],
) -> reqwest::header::HeaderMap {
    let mut req = client()
        .get(server.url(path))
        .header("X-API-Key", &server.keys.secret_key);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().headers().clone()
}

fn get<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    // 127.0.0.1 is the tests' trusted proxy in the second half.
    let mut server = Server::sqlite(&[]).await;
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    for path in [
        project.as_str(),
        "/api/v1/auth/me",
        "/health",
        "/openapi.json",
    ] {
        let h = headers(&server, path, &[]).await;
        assert_eq!(get(&h, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(get(&h, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(get(&h, "referrer-policy"), Some("no-referrer"), "{path}");
        assert!(
            get(&h, "permissions-policy").unwrap().contains("camera=()"),
            "{path}"
        );
        assert_eq!(
            get(&h, "content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(get(&h, "cross-origin-resource-policy"), Some("same-origin"));
        // Plain HTTP from an untrusted peer: no HSTS.
        assert_eq!(get(&h, "strict-transport-security"), None, "{path}");
    }
    // The docs may run their own inline code, load nothing from elsewhere,
    // and not be framed.
    let h = headers(&server, "/docs", &[]).await;
    let csp = get(&h, "content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    // Public endpoints (the tracker, ingestion) are loaded by other sites.
    let h = headers(&server, "/sdk/tracker.js", &[]).await;
    assert_eq!(get(&h, "cross-origin-resource-policy"), None);
    assert_eq!(get(&h, "x-content-type-options"), Some("nosniff"));

    // "X-Forwarded-Proto: https" from anyone is not believed...
    let https = [("X-Forwarded-Proto", "https")];
    assert_eq!(
        get(
            &headers(&server, "/health", &https).await,
            "strict-transport-security"
        ),
        None
    );
    // ...from a trusted proxy it is.
    server.restart_with_env(&[("ORRERY_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]")]);
    let h = headers(&server, &project, &https).await;
    assert_eq!(
        get(&h, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        get(
            &headers(&server, &project, &[("X-Forwarded-Proto", "http")]).await,
            "strict-transport-security"
        ),
        None
    );
    server.restart_with_env(&[("ORRERY_HTTP__HSTS_MAX_AGE_SECS", "0")]);
    assert_eq!(
        get(
            &headers(&server, &project, &https).await,
            "strict-transport-security"
        ),
        None
    );
}

#[tokio::test]
async fn the_docs_page_renders_under_its_csp_in_chromium() {
    let Some(browser) = browser() else {
        return;
    };
    let server = Server::sqlite(&[]).await;
    let summary = browser.run("docs.mjs", &[("ORRERY_URL", &server.base)]);
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert!(
        summary["csp"]
            .as_str()
            .unwrap()
            .contains("script-src 'self' 'unsafe-inline'"),
        "{summary:#}"
    );
    let spec: serde_json::Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        summary["operations"].as_u64().unwrap() as usize,
        operations,
        "{summary:#}"
    );
}
