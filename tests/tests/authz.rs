//! Authorization through the real binary: every cell of README's "Who may
//! change which key" table, the last admin key, and the project scope of
//! every endpoint in the OpenAPI spec (so a new endpoint cannot be
//! forgotten).

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::collections::BTreeMap;

use orrery_tests::{Api, InProcess, Server, backends, client};
use reqwest::Method;
use serde_json::{Value, json};

/// The callers of the table, by their README label.
struct Callers {
    keys: BTreeMap<&'static str, String>,
}

/// A project made by the instance admin: (id, public key, secret key).
async fn new_project(server: &impl Api, name: &str) -> (String, String, String) {
    new_project_with(server, &server.keys().secret_key, name).await
}

/// A key made by the instance admin: (id, key).
async fn admin_makes_key(
    server: &impl Api,
    project: &str,
    kind: &str,
    admin: bool,
) -> (String, String) {
    make_key(server, &server.keys().secret_key, project, kind, admin).await
}

/// The key records of `project`, as `caller` lists them.
async fn keys_of(server: &impl Api, caller: &str, project: &str) -> Vec<Value> {
    let path = format!("/api/v1/projects/{project}/keys");
    let (status, list) = server.get(&path, caller).await;
    assert_eq!(status, 200, "{list}");
    list["keys"].as_array().unwrap().clone()
}

async fn key_record(server: &impl Api, project: &str, id: &str) -> Value {
    let keys = keys_of(server, &server.keys().secret_key, project).await;
    keys.iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no key {id} in {keys:?}"))
}

async fn key_count(server: &impl Api, project: &str) -> usize {
    keys_of(server, &server.keys().secret_key, project)
        .await
        .len()
}

/// README's table: (caller label, column label) -> status.
fn readme_table() -> (Vec<String>, Vec<(String, Vec<u16>)>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let section = readme
        .split("### Who may change which key")
        .nth(1)
        .expect("README has the section \"Who may change which key\"");
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    let header = rows[0][1..].to_vec();
    let body = rows[2..]
        .iter()
        .map(|r| {
            let codes = r[1..]
                .iter()
                .map(|c| c.parse().expect("a status code"))
                .collect();
            (r[0].clone(), codes)
        })
        .collect();
    (header, body)
}

/// The error code of a refused cell: 404 `not_found` for a key of another
/// project (to it the project does not exist), 403 `forbidden` otherwise.
fn refusal_code(status: u16) -> &'static str {
    if status == 404 {
        "not_found"
    } else {
        "forbidden"
    }
}

/// Runs one cell: `caller` does `column` to project `pid`; returns the
/// status, after checking that a refused change changed nothing and an
/// accepted one did what it says.
async fn run_cell(server: &impl Api, pid: &str, caller: &str, column: &str) -> Vec<u16> {
    let keys_path = format!("/api/v1/projects/{pid}/keys");
    match column {
        "create a key" | "create an admin key" => {
            let admin = column == "create an admin key";
            let kinds: &[&str] = if admin {
                &["secret"]
            } else {
                &["public", "secret", "execute"]
            };
            let mut out = Vec::new();
            for kind in kinds {
                let before = key_count(server, pid).await;
                let (status, body) = server
                    .call(
                        "POST",
                        &keys_path,
                        caller,
                        Some(json!({"name": "cell", "kind": kind, "admin": admin})),
                    )
                    .await;
                if status == 201 {
                    assert_eq!(body["info"]["admin"], admin, "{body}");
                    assert_eq!(body["info"]["kind"], *kind, "{body}");
                    assert_eq!(key_count(server, pid).await, before + 1);
                } else {
                    assert_eq!(body["code"], refusal_code(status), "{body}");
                    assert_eq!(
                        key_count(server, pid).await,
                        before,
                        "a refused create made a key"
                    );
                }
                out.push(status);
            }
            out
        }
        "list keys" => vec![server.call("GET", &keys_path, caller, None).await.0],
        "rotate a key" | "revoke a key" | "rotate an admin key" | "revoke an admin key" => {
            let admin = column.contains("admin");
            let rotate = column.starts_with("rotate");
            let kinds: &[&str] = if admin {
                &["secret"]
            } else {
                &["public", "secret", "execute"]
            };
            let mut out = Vec::new();
            for kind in kinds {
                let (target_id, target_key) = admin_makes_key(server, pid, kind, admin).await;
                let before = key_count(server, pid).await;
                let (status, body) = if rotate {
                    server
                        .call(
                            "POST",
                            &format!("{keys_path}/{target_id}/rotate"),
                            caller,
                            Some(json!({"grace_seconds": 3600})),
                        )
                        .await
                } else {
                    server
                        .call(
                            "POST",
                            &format!("{keys_path}/{target_id}/revoke"),
                            caller,
                            None,
                        )
                        .await
                };
                let record = key_record(server, pid, &target_id).await;
                match status {
                    201 => {
                        // The new key has exactly the old key's rights.
                        assert_eq!(body["info"]["admin"], admin, "{body}");
                        assert_eq!(body["info"]["kind"], *kind, "{body}");
                        assert!(record["expires_at"].is_string(), "{record}");
                        assert_eq!(key_count(server, pid).await, before + 1);
                    }
                    200 => assert!(record["revoked_at"].is_string(), "{record}"),
                    _ => {
                        assert_eq!(body["code"], refusal_code(status), "{column}: {body}");
                        assert_eq!(record["active"], true, "a refused {column} touched the key");
                        assert!(record["expires_at"].is_null() && record["revoked_at"].is_null());
                        assert_eq!(
                            key_count(server, pid).await,
                            before,
                            "a refused {column} made a key"
                        );
                        // And the target still works: a public key sends
                        // events, a secret key reads them, and an execute key
                        // is still known (403 for reading, not 401).
                        let probe = match *kind {
                            "public" => {
                                let event = json!({"event": "probe"});
                                server.post_events(&target_key, &[], event).await.0
                            }
                            _ => {
                                let events = format!("/api/v1/projects/{pid}/events?limit=1");
                                server.get(&events, &target_key).await.0
                            }
                        };
                        let works = if *kind == "execute" { 403 } else { 200 };
                        assert_eq!(
                            probe, works,
                            "the target key of a refused {column} stopped working"
                        );
                    }
                }
                out.push(status);
            }
            out
        }
        other => panic!("README column {other:?} has no test: add it to run_cell"),
    }
}

async fn callers(server: &impl Api) -> (String, Callers) {
    let pid = server.keys().project_id.clone();
    let (other, _, other_secret) = new_project(server, "other").await;
    let (_, public) = admin_makes_key(server, &pid, "public", false).await;
    let (_, execute) = admin_makes_key(server, &pid, "execute", false).await;
    let (_, secret) = admin_makes_key(server, &pid, "secret", false).await;
    let (_, other_admin) = admin_makes_key(server, &other, "secret", true).await;
    let keys = BTreeMap::from([
        ("public key of the project", public),
        ("execute key of the project", execute),
        ("secret key of the project", secret),
        ("secret key of another project", other_secret),
        ("admin key of the project", server.keys().secret_key.clone()),
        ("admin key of another project", other_admin),
    ]);
    (pid, Callers { keys })
}

#[tokio::test]
async fn every_cell_of_the_key_rules_table() {
    for backend in backends("every_cell_of_the_key_rules_table") {
        let server = InProcess::on(backend, |_| {}).await;
        let (pid, callers) = callers(&server).await;
        let (header, rows) = readme_table();
        assert_eq!(rows.len(), callers.keys.len(), "README rows vs callers");
        let mut failures = Vec::new();
        for (label, expected) in &rows {
            let key = callers
                .keys
                .get(label.as_str())
                .unwrap_or_else(|| panic!("README row {label:?} has no caller in the test"));
            for (column, want) in header.iter().zip(expected) {
                let got = run_cell(&server, &pid, key, column).await;
                if got.iter().any(|g| g != want) {
                    failures.push(format!(
                        "{label} / {column}: README says {want}, got {got:?}"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{backend:?}:\n{}", failures.join("\n"));
        drop(server);
    }
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_revoked() {
    for backend in backends("the_last_admin_key_cannot_be_revoked") {
        let server = InProcess::on(backend, |_| {}).await;
        let pid = server.keys.project_id.clone();
        let admin = server.keys.secret_key.clone();
        let keys_path = format!("/api/v1/projects/{pid}/keys");
        let (_, list) = server.call("GET", &keys_path, &admin, None).await;
        let admin_id = list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["admin"] == true)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();

        // The only admin key revoking itself.
        let (status, body) = server
            .call(
                "POST",
                &format!("{keys_path}/{admin_id}/revoke"),
                &admin,
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "last_admin_key");
        assert!(
            body["message"].as_str().unwrap().contains("admin key"),
            "{body}"
        );
        assert_eq!(
            server.call("GET", "/api/v1/projects", &admin, None).await.0,
            200
        );

        // Rotated with a grace period, the old key is on its way out and
        // does not count: the new one is now the last.
        let (status, rotated) = server
            .call(
                "POST",
                &format!("{keys_path}/{admin_id}/rotate"),
                &admin,
                Some(json!({"grace_seconds": 600})),
            )
            .await;
        assert_eq!(status, 201, "{rotated}");
        let new_id = rotated["info"]["id"].as_str().unwrap().to_owned();
        let new_key = rotated["key"].as_str().unwrap().to_owned();
        let (status, body) = server
            .call(
                "POST",
                &format!("{keys_path}/{new_id}/revoke"),
                &admin,
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        // The old one may go: the new one stays.
        let (status, _) = server
            .call(
                "POST",
                &format!("{keys_path}/{admin_id}/revoke"),
                &new_key,
                None,
            )
            .await;
        assert_eq!(status, 200);

        // Deleting the project that holds the last lasting admin key. Make
        // `lasting` (project `other`) the only lasting admin key, and
        // `expiring` (project `third`) an admin key in its grace period.
        let (other, _, _) = new_project_with(&server, &new_key, "other").await;
        let (_, lasting) = make_key_with(&server, &new_key, &other, true).await;
        let (status, _) = server
            .call(
                "POST",
                &format!("{keys_path}/{new_id}/revoke"),
                &lasting,
                None,
            )
            .await;
        assert_eq!(status, 200, "another lasting admin key exists");
        let (third, _, _) = new_project_with(&server, &lasting, "third").await;
        let (expiring_id, expiring) = make_key_with(&server, &lasting, &third, true).await;
        let (status, rotated) = server
            .call(
                "POST",
                &format!("/api/v1/projects/{third}/keys/{expiring_id}/rotate"),
                &expiring,
                Some(json!({"grace_seconds": 600})),
            )
            .await;
        assert_eq!(status, 201);
        let successor = rotated["info"]["id"].as_str().unwrap();
        let (status, _) = server
            .call(
                "POST",
                &format!("/api/v1/projects/{third}/keys/{successor}/revoke"),
                &lasting,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = server
            .call(
                "DELETE",
                &format!("/api/v1/projects/{other}"),
                &expiring,
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "last_admin_key");
        assert_eq!(
            server
                .call("GET", "/api/v1/projects", &lasting, None)
                .await
                .0,
            200
        );
        let (status, _) = server
            .call("GET", &format!("/api/v1/projects/{other}"), &lasting, None)
            .await;
        assert_eq!(status, 200, "the refused delete left the project");

        concurrent_revocations_leave_one(&server, &lasting, &other).await;
        drop(server);
    }
}

async fn new_project_with(server: &impl Api, admin: &str, name: &str) -> (String, String, String) {
    let keys = server.create_project(admin, name).await;
    (keys.project_id, keys.public_key, keys.secret_key)
}

/// A key made by `caller`: (id, key).
async fn make_key(
    server: &impl Api,
    caller: &str,
    project: &str,
    kind: &str,
    admin: bool,
) -> (String, String) {
    let body = json!({"name": format!("{kind} target"), "kind": kind, "admin": admin});
    server.create_key(caller, project, body).await
}

/// An admin key made by `caller`.
async fn make_key_with(
    server: &impl Api,
    caller: &str,
    project: &str,
    admin: bool,
) -> (String, String) {
    make_key(server, caller, project, "secret", admin).await
}

async fn key_ids(server: &impl Api, admin: &str, project: &str, only_admin: bool) -> Vec<String> {
    keys_of(server, admin, project)
        .await
        .iter()
        .filter(|k| !only_admin || k["admin"] == true)
        .filter(|k| k["active"] == true)
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Two lasting admin keys revoke each other at the same moment, many
/// times: at most one revocation passes, and an admin key always remains.
async fn concurrent_revocations_leave_one(server: &impl Api, admin: &str, project: &str) {
    let mut current = admin.to_owned();
    for round in 0..10 {
        let (a_id, a) = make_key_with(server, &current, project, true).await;
        let (b_id, b) = make_key_with(server, &current, project, true).await;
        // Leave only a and b as lasting admin keys.
        for id in key_ids(server, &a, project, true).await {
            if id != a_id && id != b_id {
                let path = format!("/api/v1/projects/{project}/keys/{id}/revoke");
                let (status, body) = server.call("POST", &path, &a, None).await;
                assert_eq!(status, 200, "{body}");
            }
        }
        let pa = format!("/api/v1/projects/{project}/keys/{b_id}/revoke");
        let pb = format!("/api/v1/projects/{project}/keys/{a_id}/revoke");
        let (ra, rb) = tokio::join!(
            server.call("POST", &pa, &a, None),
            server.call("POST", &pb, &b, None)
        );
        for (status, body) in [&ra, &rb] {
            // 409: the other went first; 401: the other revoked this caller first.
            assert!(
                [200, 409, 401].contains(status),
                "round {round}: {status} {body}"
            );
        }
        let passed = [ra.0, rb.0].iter().filter(|s| **s == 200).count();
        assert!(
            passed <= 1,
            "round {round}: both revocations passed: {ra:?} {rb:?}"
        );
        current = if ra.0 == 200 { a } else { b };
        assert_eq!(
            server
                .call("GET", "/api/v1/projects", &current, None)
                .await
                .0,
            200,
            "round {round}: no admin key left"
        );
    }
}

/// Every operation of the OpenAPI spec is either scoped by a
/// `{project_id}` path parameter (and then refused to every key of another
/// project, before its body is read) or listed here with the check that
/// shows it only touches the key's own project.
const KEY_SCOPED: &[&str] = &[
    "ingest_events",
    "tracking_pixel",
    // Other systems' ingestion: the project is the key's, or the one the
    // `compat` settings give the token or domain (tests/tests/compat.rs);
    // flags and remote config read nothing of any project.
    "posthog_capture",
    "posthog_batch",
    "posthog_e",
    "posthog_i_v0_e",
    "posthog_flags",
    "posthog_decide",
    "posthog_remote_config",
    "posthog_remote_config_script",
    "plausible_event",
    "bilan_events",
    "product_ingest",
    "create_project",
    "list_projects",
    "execute",
    "execute_ws",
    "upload_module",
    "list_modules",
    "get_module",
    "delete_module",
    "upload_plugin",
    "list_plugins",
    "get_plugin",
    "replace_plugin",
    "delete_plugin",
    // Accounts: login needs none; who-am-I, password and tickets act on
    // the caller's own account; the rest are administrators' (checked
    // below).
    "register",
    "login",
    "refresh",
    "logout",
    "me",
    "change_password",
    "ws_ticket",
    "list_accounts",
    "create_account",
    "get_account",
    "update_account",
    "delete_account",
    "reset_password",
    "health",
    "health_ready",
    "health_db",
    "metrics",
];

/// Logs in a new account made owner of `project` (with its secret key);
/// answers its access token. The instance's first account (an
/// administrator) is registered first when there is none.
async fn owner_token(server: &Server, project: &str, secret: &str) -> String {
    let password = "correct horse battery";
    let register = json!({"email": "root@x.io", "password": password});
    let (status, _) = server
        .call("POST", "/api/v1/auth/register", "", Some(register))
        .await;
    assert!(matches!(status, 201 | 403), "{status}");
    let (status, body) = server
        .post_json(
            "/api/v1/users",
            &server.keys.secret_key,
            json!({"email": "owner@x.io", "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .call(
            "PUT",
            &format!("/api/v1/projects/{project}/members"),
            secret,
            Some(json!({"email": "owner@x.io", "role": "owner"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/auth/login",
            "",
            Some(json!({"email": "owner@x.io", "password": password})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn no_key_acts_on_another_project_through_any_endpoint() {
    let server = Server::sqlite(&[]).await;
    let victim = server.keys.project_id.clone();
    let (_, victim_public, victim_secret) = (
        (),
        server.keys.public_key.clone(),
        server.keys.secret_key.clone(),
    );
    let (attacker, attacker_public, attacker_secret) = new_project(&server, "attacker").await;
    let (_, attacker_execute) = {
        let (status, body) = server
            .call(
                "POST",
                &format!("/api/v1/projects/{attacker}/keys"),
                &attacker_secret,
                Some(json!({"name": "x", "kind": "execute"})),
            )
            .await;
        assert_eq!(status, 201);
        ((), body["key"].as_str().unwrap().to_owned())
    };
    // Something in the victim project to protect.
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/events",
            &victim_public,
            Some(json!({"event": "secret"})),
        )
        .await;
    assert_eq!(status, 200);
    let victim_keys_before = key_count(&server, &victim).await;
    // And a person: the owner of the attacker's project, logged in.
    let attacker_token = owner_token(&server, &attacker, &attacker_secret).await;

    let spec: Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut scoped = 0;
    let mut unclassified = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or("?").to_owned();
            if !path.contains("{project_id}") {
                if !KEY_SCOPED.contains(&id.as_str()) {
                    unclassified.push(format!("{method} {path} ({id})"));
                }
                continue;
            }
            scoped += 1;
            let url = server.url(
                &path
                    .replace("{project_id}", &victim)
                    .replace("{key_id}", &uuid::Uuid::now_v7().to_string())
                    .replace("{module_id}", &"0".repeat(64))
                    .replace("{distinct_id}", "someone")
                    .replace("{account_id}", &uuid::Uuid::now_v7().to_string()),
            );
            assert!(!url.contains('{'), "path parameter not filled in {path}");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // The owner of another project: the victim's is not there.
            let resp = client()
                .request(method.clone(), &url)
                .header("Authorization", format!("Bearer {attacker_token}"))
                .header("content-type", "application/json")
                .body(r#"{"name": "pwned", "email": "x@x.io", "role": "owner"}"#)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, answer["code"].as_str()),
                (404, Some("not_found")),
                "{method} {url} ({id}) by the owner of another project: {answer}"
            );
            for key in [&attacker_secret, &attacker_public, &attacker_execute] {
                // A body that would pass for most operations, and one that
                // would not: the refusal comes before either is read.
                for body in [
                    r#"{"name": "pwned", "kind": "secret", "admin": true, "stages": [{"plugin": "ip_hash"}]}"#,
                    r#"{"truncated"#,
                ] {
                    let resp = client()
                        .request(method.clone(), &url)
                        .header("X-API-Key", key.as_str())
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let answer: Value = resp.json().await.unwrap_or(Value::Null);
                    assert_eq!(
                        (status, answer["code"].as_str()),
                        (404, Some("not_found")),
                        "{method} {url} ({id}) with a key of another project: {answer}"
                    );
                }
            }
        }
    }
    assert!(
        unclassified.is_empty(),
        "operations neither scoped by {{project_id}} nor listed in KEY_SCOPED (classify them): {unclassified:?}"
    );
    assert!(
        scoped >= 16,
        "only {scoped} project-scoped operations found"
    );
    // Nothing of the victim changed.
    assert_eq!(key_count(&server, &victim).await, victim_keys_before);
    let (_, project) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{victim}"),
            &victim_secret,
            None,
        )
        .await;
    assert_ne!(project["name"], "pwned");
    let (_, pipeline) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{victim}/pipeline"),
            &victim_secret,
            None,
        )
        .await;
    assert_eq!(pipeline["is_default"], true, "{pipeline}");

    // The KEY_SCOPED operations, each checked for its scope.
    // list_projects: only the key's own.
    let (_, list) = server
        .call("GET", "/api/v1/projects", &attacker_secret, None)
        .await;
    let ids: Vec<&str> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![attacker.as_str()]);
    // create_project: admin keys only.
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/projects",
            &attacker_secret,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 403);
    // Accounts: administrators only, for a non-admin key and for a user,
    // who cannot make themselves one either.
    let bearer = format!("Bearer {attacker_token}");
    let me = server
        .send(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &bearer)],
            None,
        )
        .await
        .json();
    let own = me["account"]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        ("GET", "/api/v1/users".to_owned(), None),
        (
            "POST",
            "/api/v1/users".to_owned(),
            Some(json!({"email": "new@x.io", "password": "long enough"})),
        ),
        (
            "PATCH",
            format!("/api/v1/users/{own}"),
            Some(json!({"admin": true})),
        ),
        (
            "POST",
            format!("/api/v1/users/{own}/password"),
            Some(json!({"password": "long enough"})),
        ),
        ("DELETE", format!("/api/v1/users/{own}"), None),
    ] {
        let (status, answer) = server
            .call(method, &path, &attacker_secret, body.clone())
            .await;
        assert_eq!(
            status, 403,
            "{method} {path} with a non-admin key: {answer}"
        );
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let a = server
            .send(
                method,
                &path,
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/json"),
                ],
                bytes,
            )
            .await;
        assert_eq!(a.status, 403, "{method} {path} by a user: {}", a.text());
    }
    // ingest_events / tracking_pixel: stored in the key's project, whatever
    // the body says.
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/events",
            &attacker_public,
            Some(json!({"event": "mine", "project_id": victim})),
        )
        .await;
    assert_eq!(
        status, 400,
        "unknown fields are refused, project_id included"
    );
    let resp = client()
        .get(server.url(&format!("/t.gif?k={attacker_public}&e=pixel_mine")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, events) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{victim}/events?event=pixel_mine"),
            &victim_secret,
            None,
        )
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 0);
    // Plugins are instance-wide: only an admin key reads or changes them.
    for (method, path) in [
        ("GET", "/api/v1/plugins"),
        ("POST", "/api/v1/plugins"),
        ("GET", "/api/v1/plugins/x"),
        ("PUT", "/api/v1/plugins/x"),
        ("DELETE", "/api/v1/plugins/x"),
    ] {
        for key in [&attacker_secret, &attacker_public, &attacker_execute] {
            let body =
                matches!(method, "POST" | "PUT").then(|| json!({"name": "x", "code": "AAAA"}));
            let (status, answer) = server.call(method, path, key, body).await;
            assert_eq!(
                status, 403,
                "{method} {path} with a non-admin key: {answer}"
            );
        }
    }
    // WASM modules: another project's module is invisible.
    let wat = "(module (func (export \"_start\")))";
    let resp = client()
        .post(server.url("/api/v1/wasm/modules?name=victim"))
        .header("X-API-Key", &victim_secret)
        .header("content-type", "application/octet-stream")
        .body(wat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let module: Value = resp.json().await.unwrap();
    let module_id = module["id"].as_str().unwrap();
    for key in [&attacker_secret, &attacker_execute] {
        let (status, _) = server
            .call(
                "GET",
                &format!("/api/v1/wasm/modules/{module_id}"),
                key,
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = server
            .call(
                "DELETE",
                &format!("/api/v1/wasm/modules/{module_id}"),
                key,
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (_, list) = server.call("GET", "/api/v1/wasm/modules", key, None).await;
        assert!(!list.to_string().contains(module_id), "{list}");
        let (status, run) = server
            .call(
                "POST",
                "/api/v1/execute",
                key,
                Some(json!({"language": "wasm", "module_id": module_id})),
            )
            .await;
        assert_eq!(status, 404, "running another project's module: {run}");
    }
    let (status, _) = server
        .call(
            "GET",
            &format!("/api/v1/wasm/modules/{module_id}"),
            &victim_secret,
            None,
        )
        .await;
    assert_eq!(status, 200, "the module is still there for its project");
}
