//! Accounts end to end through the real binary, on SQLite and PostgreSQL:
//! the first administrator, login, refresh with rotation and reuse
//! detection, logout, expiry, roles (owner, member, viewer) and who sees
//! which project, cookies with CSRF, lockout and its end, a revocation seen
//! by a second instance, refusing when the database cannot answer, tickets,
//! malformed tokens, and `orrery user create`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use orrery_tests::{Answer, Api, Backend, Server, each_backend};
use serde_json::{Value, json};
use sqlx::Connection;

const PASSWORD: &str = "correct horse battery";

/// A call with `headers` and a JSON body.
async fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut all = headers.to_vec();
    let bytes = body.map(|b| {
        all.push(("Content-Type", "application/json"));
        serde_json::to_vec(&b).unwrap()
    });
    server.send(method, path, &all, bytes).await
}

/// A call with an access token.
async fn as_user(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let a = call(server, method, path, &[("Authorization", &auth)], body).await;
    (a.status, a.json())
}

/// Logs in; answers the whole answer.
async fn login(server: &Server, email: &str, password: &str) -> Answer {
    call(
        server,
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// Logs in and answers (access token, refresh token).
async fn tokens(server: &Server, email: &str) -> (String, String) {
    let a = login(server, email, PASSWORD).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let body = a.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Registers the first administrator.
async fn first_admin(server: &Server, email: &str) -> Value {
    let a = call(
        server,
        "POST",
        "/api/v1/auth/register",
        &[],
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text());
    a.json()
}

/// An account made by an administrator (token or admin key).
async fn make_account(server: &Server, email: &str) -> String {
    let (status, body) = server
        .post_json(
            "/api/v1/users",
            &server.keys.secret_key,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn refresh(server: &Server, token: &str) -> Answer {
    call(
        server,
        "POST",
        "/api/v1/auth/refresh",
        &[],
        Some(json!({"refresh_token": token})),
    )
    .await
}

#[tokio::test]
async fn login_refresh_rotation_reuse_logout_and_expiry() {
    each_backend(
        "login_refresh_rotation_reuse_logout_and_expiry",
        &[("ORRERY_AUTH__REVOCATION_CHECK_MS", "0")],
        async |server| {
            let project = server.keys.project_id.clone();
            let events = format!("/api/v1/projects/{project}/events");
            // The first registration makes an administrator; the next is
            // closed.
            let admin = first_admin(server, "Ada@Example.com").await;
            assert_eq!(admin["email"], "ada@example.com");
            assert_eq!(admin["admin"], true);
            let again = call(
                server,
                "POST",
                "/api/v1/auth/register",
                &[],
                Some(json!({"email": "eve@example.com", "password": PASSWORD})),
            )
            .await;
            assert_eq!(again.status, 403, "{}", again.text());
            assert_eq!(again.json()["code"], "registration_closed");

            // Wrong password and unknown e-mail: the same answer.
            let wrong = login(server, "ada@example.com", "not the password").await;
            let unknown = login(server, "nobody@example.com", PASSWORD).await;
            assert_eq!((wrong.status, unknown.status), (401, 401));
            assert_eq!(wrong.json(), unknown.json());
            assert_eq!(wrong.json()["code"], "invalid_credentials");

            let (access, refresh1) = tokens(server, "ada@example.com").await;
            let (status, me) = as_user(server, &access, "GET", "/api/v1/auth/me", None).await;
            assert_eq!(
                (status, me["account"]["email"].as_str()),
                (200, Some("ada@example.com"))
            );
            // An administrator reads any project.
            assert_eq!(as_user(server, &access, "GET", &events, None).await.0, 200);

            // Refresh rotates both tokens.
            let r = refresh(server, &refresh1).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let access2 = r.json()["access_token"].as_str().unwrap().to_owned();
            let refresh2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
            assert_ne!(refresh2, refresh1);
            assert_eq!(as_user(server, &access2, "GET", &events, None).await.0, 200);

            // The spent token again: theft. The whole login ends, the
            // newest tokens with it.
            let reused = refresh(server, &refresh1).await;
            assert_eq!(reused.status, 401);
            assert_eq!(reused.json()["code"], "refresh_token_reused");
            let (status, body) = as_user(server, &access2, "GET", &events, None).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("token_revoked"))
            );
            assert_eq!(refresh(server, &refresh2).await.status, 401);

            // Logout ends that login only.
            let (a, r) = tokens(server, "ada@example.com").await;
            let (other, _) = tokens(server, "ada@example.com").await;
            assert_eq!(
                as_user(server, &a, "POST", "/api/v1/auth/logout", None)
                    .await
                    .0,
                204
            );
            assert_eq!(as_user(server, &a, "GET", &events, None).await.0, 401);
            assert_eq!(refresh(server, &r).await.json()["code"], "invalid_token");
            assert_eq!(as_user(server, &other, "GET", &events, None).await.0, 200);

            // Expiry.
            server.restart_with_env(&[("ORRERY_AUTH__ACCESS_TOKEN_SECS", "1")]);
            let (short, r) = tokens(server, "ada@example.com").await;
            assert_eq!(as_user(server, &short, "GET", &events, None).await.0, 200);
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let (status, body) = as_user(server, &short, "GET", &events, None).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("invalid_token"))
            );
            assert!(
                body["message"].as_str().unwrap().contains("expired"),
                "{body}"
            );
            // The refresh token outlives it.
            assert_eq!(refresh(server, &r).await.status, 200);
        },
    )
    .await;
}

#[tokio::test]
async fn roles_decide_what_each_member_sees_and_does() {
    each_backend(
        "roles_decide_what_each_member_sees_and_does",
        &[("ORRERY_AUTH__REVOCATION_CHECK_MS", "0")],
        async |server| {
            let key = server.keys.secret_key.clone();
            let project = server.keys.project_id.clone();
            let other = server.create_project(&key, "other").await;
            for email in ["member@x.io", "viewer@x.io", "outsider@x.io"] {
                make_account(server, email).await;
            }
            let members = format!("/api/v1/projects/{project}/members");
            for (email, role) in [("member@x.io", "member"), ("viewer@x.io", "viewer")] {
                let (status, body) = server
                    .call(
                        "PUT",
                        &members,
                        &key,
                        Some(json!({"email": email, "role": role})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            let (status, body) = server
                .call(
                    "PUT",
                    &members,
                    &key,
                    Some(json!({"email": "ghost@x.io", "role": "member"})),
                )
                .await;
            assert_eq!(status, 404, "{body}");
            assert!(body["message"].as_str().unwrap().contains("ghost@x.io"));

            let (member, _) = tokens(server, "member@x.io").await;
            let (viewer, _) = tokens(server, "viewer@x.io").await;
            let (outsider, _) = tokens(server, "outsider@x.io").await;
            let p = |rest: &str| format!("/api/v1/projects/{project}{rest}");

            // Each sees only their projects.
            let (_, list) = as_user(server, &member, "GET", "/api/v1/projects", None).await;
            let ids: Vec<&str> = list["projects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, vec![project.as_str()]);
            let (_, list) = as_user(server, &outsider, "GET", "/api/v1/projects", None).await;
            assert_eq!(list["projects"], json!([]));

            // A member reads everything, changes nothing.
            assert_eq!(
                as_user(server, &member, "GET", &p("/events"), None).await.0,
                200
            );
            assert_eq!(
                as_user(server, &member, "GET", &p("/keys"), None).await.0,
                200
            );
            assert_eq!(
                as_user(
                    server,
                    &member,
                    "POST",
                    &p("/sql"),
                    Some(json!({"query": "SELECT 1 AS one"}))
                )
                .await
                .0,
                200
            );
            let (status, body) = as_user(
                server,
                &member,
                "PATCH",
                &p(""),
                Some(json!({"name": "renamed"})),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("forbidden")),
                "{body}"
            );
            // A viewer reads statistics only.
            assert_eq!(
                as_user(server, &viewer, "GET", &p("/stats/overview"), None)
                    .await
                    .0,
                200
            );
            // Nor writes anything.
            let (status, body) = as_user(
                server,
                &viewer,
                "PUT",
                &p("/pipeline"),
                Some(json!({"stages": [{"plugin": "ip_hash"}]})),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("forbidden")),
                "{body}"
            );
            assert!(
                body["message"].as_str().unwrap().contains("viewer"),
                "{body}"
            );
            for path in ["/events", "/keys", "/dead-letters"] {
                let (status, body) = as_user(server, &viewer, "GET", &p(path), None).await;
                assert_eq!(status, 403, "{path}: {body}");
            }
            // Another project is not there at all.
            for token in [&member, &viewer, &outsider] {
                let path = format!("/api/v1/projects/{}/events", other.project_id);
                let (status, body) = as_user(server, token, "GET", &path, None).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (404, Some("not_found")),
                    "{body}"
                );
            }
            // A user's own project: owner, with its keys.
            let (status, made) = as_user(
                server,
                &outsider,
                "POST",
                "/api/v1/projects",
                Some(json!({"name": "mine"})),
            )
            .await;
            assert_eq!(status, 201, "{made}");
            let mine = made["project"]["id"].as_str().unwrap();
            let (status, _) = as_user(
                server,
                &outsider,
                "POST",
                &format!("/api/v1/projects/{mine}/keys"),
                Some(json!({"name": "ci", "kind": "public"})),
            )
            .await;
            assert_eq!(status, 201);
            let (_, me) = as_user(server, &outsider, "GET", "/api/v1/auth/me", None).await;
            assert_eq!(
                me["projects"],
                json!([{"project_id": mine, "role": "owner"}])
            );
            // Only administrators manage accounts.
            let (status, _) = as_user(server, &member, "GET", "/api/v1/users", None).await;
            assert_eq!(status, 403);

            // Deactivation ends the member's logins and refuses new ones.
            let member_id = me_id(server, &member).await;
            let (status, body) = server
                .call(
                    "PATCH",
                    &format!("/api/v1/users/{member_id}"),
                    &key,
                    Some(json!({"active": false})),
                )
                .await;
            assert_eq!(
                (status, body["active"].as_bool()),
                (200, Some(false)),
                "{body}"
            );
            let (status, body) = as_user(server, &member, "GET", &p("/events"), None).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("token_revoked"))
            );
            let a = login(server, "member@x.io", PASSWORD).await;
            assert_eq!(
                (a.status, a.json()["code"].as_str()),
                (403, Some("account_deactivated"))
            );
            // Removal from the project: 404 from then on.
            let viewer_id = me_id(server, &viewer).await;
            let (status, _) = server
                .call("DELETE", &format!("{members}/{viewer_id}"), &key, None)
                .await;
            assert_eq!(status, 204);
            assert_eq!(
                as_user(server, &viewer, "GET", &p("/stats/overview"), None)
                    .await
                    .0,
                404
            );
        },
    )
    .await;
}

async fn me_id(server: &Server, token: &str) -> String {
    let (_, me) = as_user(server, token, "GET", "/api/v1/auth/me", None).await;
    me["account"]["id"].as_str().unwrap().to_owned()
}

/// The `Set-Cookie` values of an answer.
fn set_cookies(a: &Answer) -> Vec<String> {
    a.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

/// `name=value` of the cookie `name` among `cookies`.
fn cookie<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap())
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

#[tokio::test]
async fn cookies_need_the_csrf_token_to_write() {
    let server = Server::sqlite(&[]).await;
    first_admin(&server, "ada@x.io").await;
    let a = call(
        &server,
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(json!({"email": "ada@x.io", "password": PASSWORD, "cookie": true})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let body = a.json();
    // The tokens are in HTTP-only cookies, not in the answer.
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let cookies = set_cookies(&a);
    for name in ["orrery_access", "orrery_refresh"] {
        let c = cookies.iter().find(|c| c.starts_with(name)).unwrap();
        for attr in ["HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(c.contains(attr), "{c}");
        }
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.contains("Path=/api/v1/auth") && c.starts_with("orrery_refresh"))
    );
    let jar = format!(
        "{}; {}",
        cookie(&cookies, "orrery_access"),
        cookie(&cookies, "orrery_csrf")
    );
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    // Reads need no CSRF token.
    let read = call(&server, "GET", &project, &[("Cookie", &jar)], None).await;
    assert_eq!(read.status, 200, "{}", read.text());
    // Writes do: none, a wrong one, then the right one.
    let rename = Some(json!({"name": "renamed"}));
    let none = call(
        &server,
        "PATCH",
        &project,
        &[("Cookie", &jar)],
        rename.clone(),
    )
    .await;
    assert_eq!(
        (none.status, none.json()["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let wrong = call(
        &server,
        "PATCH",
        &project,
        &[("Cookie", &jar), ("X-CSRF-Token", "AAAA")],
        rename.clone(),
    )
    .await;
    assert_eq!(wrong.status, 403);
    let ok = call(
        &server,
        "PATCH",
        &project,
        &[("Cookie", &jar), ("X-CSRF-Token", &csrf)],
        rename,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // Refresh from the cookie sets new cookies.
    let r = call(
        &server,
        "POST",
        "/api/v1/auth/refresh",
        &[("Cookie", cookie(&cookies, "orrery_refresh"))],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = set_cookies(&r);
    assert_ne!(
        cookie(&fresh, "orrery_access"),
        cookie(&cookies, "orrery_access")
    );
    // Logout clears them.
    let jar = format!(
        "{}; {}",
        cookie(&fresh, "orrery_access"),
        cookie(&fresh, "orrery_csrf")
    );
    let out = call(
        &server,
        "POST",
        "/api/v1/auth/logout",
        &[
            ("Cookie", &jar),
            ("X-CSRF-Token", r.json()["csrf_token"].as_str().unwrap()),
        ],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    assert!(set_cookies(&out).iter().all(|c| c.contains("Max-Age=0")));
    let after = call(&server, "GET", &project, &[("Cookie", &jar)], None).await;
    assert_eq!(after.status, 401);
}

#[tokio::test]
async fn failed_logins_lock_the_account_and_the_address_for_a_while() {
    each_backend(
        "failed_logins_lock_the_account_and_the_address_for_a_while",
        &[
            ("ORRERY_AUTH__LOCKOUT_ATTEMPTS", "3"),
            ("ORRERY_AUTH__LOCKOUT_SECS", "3"),
        ],
        async |server| {
            first_admin(server, "ada@x.io").await;
            make_account(server, "bob@x.io").await;
            for _ in 0..3 {
                assert_eq!(
                    login(server, "ada@x.io", "wrong password").await.status,
                    401
                );
            }
            // Locked: even the right password, and another account from
            // the same address.
            let locked = login(server, "ada@x.io", PASSWORD).await;
            assert_eq!(locked.status, 429, "{}", locked.text());
            assert_eq!(locked.json()["code"], "login_locked");
            let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=3).contains(&retry), "{retry}");
            assert_eq!(login(server, "bob@x.io", PASSWORD).await.status, 429);
            // An unknown e-mail is locked the same way (no enumeration).
            assert_eq!(login(server, "nobody@x.io", PASSWORD).await.status, 429);
            // And the lock ends.
            tokio::time::sleep(Duration::from_millis(3200)).await;
            assert_eq!(login(server, "ada@x.io", PASSWORD).await.status, 200);
        },
    )
    .await;
}

/// Malformed, forged, expired, tampered and huge tokens: each a 401,
/// never a 500.
#[tokio::test]
async fn malformed_tokens_are_refused_with_401() {
    let server = Server::sqlite(&[]).await;
    first_admin(&server, "ada@x.io").await;
    let (good, _) = tokens(&server, "ada@x.io").await;
    let parts: Vec<&str> = good.split('.').collect();
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut expired = claims.clone();
    expired["exp"] = json!(1);
    let mut admin_claims = claims.clone();
    admin_claims["sub"] = json!("00000000-0000-0000-0000-000000000000");
    let mut cases = vec![
        // alg none, unsigned.
        format!(
            "{}.{}.",
            enc(json!({"alg": "none", "typ": "JWT"})),
            parts[1]
        ),
        // Another algorithm named.
        format!(
            "{}.{}.{}",
            enc(json!({"alg": "HS512", "typ": "JWT"})),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            enc(json!({"alg": "RS256", "typ": "JWT"})),
            parts[1],
            parts[2]
        ),
        // Claims changed under the old signature.
        format!("{}.{}.{}", parts[0], enc(expired), parts[2]),
        format!("{}.{}.{}", parts[0], enc(admin_claims), parts[2]),
        // A signature of another key.
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([7u8; 32])
        ),
        String::new(),
        "x".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "....".into(),
        format!("{good}x"),
        "é.ü.ß".into(),
        "x".repeat(6000),
        format!("{}.{}.{}", "A".repeat(3000), parts[1], parts[2]),
    ];
    // Random bytes in base64 segments.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..100 {
        let mut seg = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            URL_SAFE_NO_PAD.encode(seed.to_le_bytes().repeat((seed % 5) as usize + 1))
        };
        cases.push(format!("{}.{}.{}", seg(), seg(), seg()));
    }
    let path = format!("/api/v1/projects/{}/events", server.keys.project_id);
    for token in &cases {
        let (status, body) = as_user(&server, token, "GET", &path, None).await;
        assert_eq!(status, 401, "{token:.60}: {body}");
        assert!(
            matches!(
                body["code"].as_str(),
                Some("invalid_token" | "unauthorized")
            ),
            "{token:.60}: {body}"
        );
        // The same in the cookie.
        let jar = format!("orrery_access={token}");
        let a = call(&server, "GET", &path, &[("Cookie", &jar)], None).await;
        assert!(matches!(a.status, 401), "{token:.60}: {}", a.text());
    }
    // Login bodies of every wrong shape: 400 or 401, never 500.
    for body in [
        json!({}),
        json!({"email": 1, "password": 2}),
        json!({"email": "ada@x.io"}),
        json!({"email": "x".repeat(300), "password": "p"}),
        json!({"email": "ada@x.io", "password": "p".repeat(2000)}),
        json!([1, 2]),
    ] {
        let a = call(
            &server,
            "POST",
            "/api/v1/auth/login",
            &[],
            Some(body.clone()),
        )
        .await;
        assert!(
            matches!(a.status, 400 | 401),
            "{body}: {} {}",
            a.status,
            a.text()
        );
    }
}

#[tokio::test]
async fn tickets_work_once_and_expire() {
    let server = Server::sqlite(&[("ORRERY_AUTH__TICKET_SECS", "1")]).await;
    first_admin(&server, "ada@x.io").await;
    make_account(&server, "out@x.io").await;
    let (admin, _) = tokens(&server, "ada@x.io").await;
    let (outsider, _) = tokens(&server, "out@x.io").await;
    let project = server.keys.project_id.clone();
    let body = Some(json!({"project_id": project}));
    let (status, t) = as_user(
        &server,
        &admin,
        "POST",
        "/api/v1/auth/ws-ticket",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["expires_in"], 1);
    // Not for a project the account cannot see.
    let (status, _) = as_user(
        &server,
        &outsider,
        "POST",
        "/api/v1/auth/ws-ticket",
        body.clone(),
    )
    .await;
    assert_eq!(status, 404);
    // A key gets none: tickets are for logged-in people.
    let (status, _) = server
        .post_json(
            "/api/v1/auth/ws-ticket",
            &server.keys.secret_key,
            json!({"project_id": project}),
        )
        .await;
    assert_eq!(status, 403);

    // The ticket opens the live stream once.
    let live = |project: &str, ticket: &str| {
        format!(
            "{}/api/v1/projects/{project}/live?ticket={ticket}",
            server.base.replace("http://", "ws://")
        )
    };
    let ticket = t["ticket"].as_str().unwrap();
    let (ws, resp) = tokio_tungstenite::connect_async(live(&project, ticket))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    drop(ws);
    let refused = |url: String| async move {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}"))
                    .unwrap_or(Value::Null);
                (resp.status().as_u16(), body)
            }
            Ok(_) => panic!("the WebSocket opened"),
            Err(e) => panic!("{e}"),
        }
    };
    let (status, answer) = refused(live(&project, ticket)).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("invalid_ticket")),
        "{answer}"
    );
    // A ticket opens only its own project's stream.
    let other = server
        .create_project(&server.keys.secret_key, "other")
        .await;
    let other_body = Some(json!({"project_id": other.project_id}));
    let (_, t2) = as_user(
        &server,
        &admin,
        "POST",
        "/api/v1/auth/ws-ticket",
        other_body,
    )
    .await;
    let (status, _) = refused(live(&project, t2["ticket"].as_str().unwrap())).await;
    assert_eq!(status, 401);
    // And expires.
    let (_, t3) = as_user(&server, &admin, "POST", "/api/v1/auth/ws-ticket", body).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = refused(live(&project, t3["ticket"].as_str().unwrap())).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_revocation_is_seen_by_another_instance_and_a_silent_database_refuses() {
    if !orrery_tests::backends("a_revocation_is_seen_by_another_instance")
        .contains(&Backend::Postgres)
    {
        return;
    }
    let env = [
        ("ORRERY_AUTH__REVOCATION_CHECK_MS", "300"),
        ("ORRERY_DATABASE__CONNECT_TIMEOUT_SECS", "1"),
    ];
    let a = Server::on(Backend::Postgres, &env).await;
    let b = a.another_instance(&[]);
    first_admin(&a, "ada@x.io").await;
    let (token, _) = tokens(&a, "ada@x.io").await;
    let path = format!("/api/v1/projects/{}/events", a.keys.project_id);
    // Issued by A, accepted by B.
    assert_eq!(as_user(&b, &token, "GET", &path, None).await.0, 200);
    assert_eq!(
        as_user(&a, &token, "POST", "/api/v1/auth/logout", None)
            .await
            .0,
        204
    );
    // B refuses it within revocation_check_ms.
    let start = Instant::now();
    loop {
        let (status, body) = as_user(&b, &token, "GET", &path, None).await;
        if status == 401 {
            assert_eq!(body["code"], "token_revoked");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "B still accepts: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() < Duration::from_millis(1500));

    // The database stops answering: after revocation_check_ms, requests
    // with a token are refused (503), not let through on stale trust.
    let (token, _) = tokens(&a, "ada@x.io").await;
    assert_eq!(as_user(&a, &token, "GET", &path, None).await.0, 200);
    let db = a.database_url.clone().unwrap();
    let name = db.rsplit_once('/').unwrap().1.to_owned();
    let admin_url = std::env::var("ORRERY_TEST_DATABASE_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let cut = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(&cut(false)).execute(&mut conn).await.unwrap();
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = as_user(&a, &token, "GET", &path, None).await;
    sqlx::query(&cut(true)).execute(&mut conn).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("auth_unavailable")),
        "{body}"
    );
    // And recovers with the database.
    let start = Instant::now();
    while as_user(&a, &token, "GET", &path, None).await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
}

#[tokio::test]
async fn the_cli_creates_an_account_that_logs_in() {
    let server = Server::sqlite(&[]).await;
    let out = std::process::Command::new(server.bin())
        .args([
            "user",
            "create",
            "--email",
            "Ops@X.io",
            "--admin",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{PASSWORD}\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ops@x.io"), "{stdout}");
    let (token, _) = tokens(&server, "ops@x.io").await;
    let (status, me) = as_user(&server, &token, "GET", "/api/v1/auth/me", None).await;
    assert_eq!((status, me["admin"].as_bool()), (200, Some(true)));
    // Registration is closed now that an account exists.
    let a = call(
        &server,
        "POST",
        "/api/v1/auth/register",
        &[],
        Some(json!({"email": "x@x.io", "password": PASSWORD})),
    )
    .await;
    assert_eq!(a.status, 403);
    // A password too short is refused, naming the rule.
    let short = std::process::Command::new(server.bin())
        .args(["user", "create", "--email", "y@x.io", "--data-dir"])
        .arg(&server.data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"short\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("8 to 1024 characters"));
}
