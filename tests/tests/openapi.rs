//! The OpenAPI document: the committed copy is current, it is complete,
//! and a Python client generated from it by a real generator (from PyPI)
//! works against a running gateway.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::process::Command;

use orrery_tests::{Server, orrery_bin, python_venv, repo};
use serde_json::Value;

fn printed_spec() -> String {
    let out = Command::new(orrery_bin()).arg("openapi").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_spec_is_current() {
    let committed = std::fs::read_to_string(repo().join("openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    assert!(
        committed == printed_spec(),
        "openapi/openapi.json is stale: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_operation_is_documented() {
    let spec: Value = serde_json::from_str(&printed_spec()).unwrap();
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("SecretKey") && schemes.contains_key("ProjectKey"));
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    let mut count = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            count += 1;
            let what = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{what}: operationId");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what}: tag"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: summary"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2') || k == "101"),
                "{what}: success response"
            );
            // Logging in is how credentials are had.
            let open = matches!(
                path.as_str(),
                "/api/v1/auth/login" | "/api/v1/auth/register" | "/api/v1/auth/refresh"
            );
            let protected = path.starts_with("/api/v1/") && !open;
            if protected {
                assert!(op["security"].is_array(), "{what}: security");
                for code in ["400", "401", "503"] {
                    let r = &responses[code];
                    assert!(
                        r["content"]["application/json; charset=utf-8"]["schema"]["$ref"]
                            == "#/components/schemas/ErrorBody",
                        "{what}: {code} documented with ErrorBody"
                    );
                }
            }
        }
    }
    assert!(count >= 16, "{count} operations");
}

#[tokio::test]
async fn generated_python_client_works_against_the_gateway() {
    let venv = python_venv();
    let out_dir = tempfile::tempdir().unwrap();
    let client_dir = out_dir.path().join("client");
    let generated = Command::new(venv.join("bin/openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(repo().join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(&client_dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&generated.stdout).into_owned()
        + &String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "generator failed:\n{log}");
    assert!(
        !log.contains("Unable to process") && !log.contains("removal of"),
        "generator dropped parts of the spec:\n{log}"
    );
    // `--meta none` writes the package's files straight into client_dir;
    // make it importable as `orrery_client`.
    let pkg_root = out_dir.path().join("pkgs");
    std::fs::create_dir_all(&pkg_root).unwrap();
    std::fs::rename(&client_dir, pkg_root.join("orrery_client")).unwrap();

    let server = Server::sqlite(&[]).await;
    let run = Command::new(venv.join("bin/python"))
        .arg(repo().join("openapi/client_test.py"))
        .args([
            &server.base,
            &server.keys.project_id,
            &server.keys.secret_key,
        ])
        .env("PYTHONPATH", &pkg_root)
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "generated client failed:\n{out}");
    assert!(out.contains("python client OK: 5 events"), "{out}");
}

/// README's error table is the list of codes the document gives: the same
/// codes, each under the status the document lists it for.
#[test]
fn readme_error_table_matches_the_document() {
    let spec: Value = serde_json::from_str(&printed_spec()).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("| code | status | meaning |")
        .expect("README has the error table");
    let mut table: Vec<(String, u16)> = Vec::new();
    for line in readme[start..].lines().skip(2) {
        let Some(row) = line.strip_prefix("| `") else {
            break;
        };
        let (code, rest) = row.split_once("` | ").expect("| `code` | status |");
        let status = rest.split(" |").next().unwrap().trim().parse().unwrap();
        table.push((code.to_owned(), status));
    }
    let codes: Vec<String> =
        spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
            .as_array()
            .expect("ErrorBody.code is an enum")
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
    let in_table: Vec<String> = table.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        in_table, codes,
        "README's table and the document's codes differ"
    );
    // Each code is documented under its status by the operations that can
    // answer it, and under no other status.
    let mut listed: Vec<(String, u16)> = Vec::new();
    for ops in spec["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            for (status, r) in op["responses"].as_object().unwrap() {
                let description = r["description"].as_str().unwrap_or_default();
                let Some(codes) = description.split("Codes: ").nth(1) else {
                    continue;
                };
                for code in codes.split('`').skip(1).step_by(2) {
                    listed.push((code.to_owned(), status.parse().unwrap()));
                }
            }
        }
    }
    for (code, status) in &table {
        if *status == 499 || *status == 405 {
            // 499: the client is gone, no answer is read. 405 answers a
            // method the path does not have: no operation to list it under.
            continue;
        }
        let description = listed
            .iter()
            .filter(|(c, _)| c == code)
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            !description.is_empty() && listed.iter().all(|(c, s)| c != code || s == status),
            "`{code}` ({status}) is documented under: [{description}]"
        );
    }
}

/// Every metric the server exports is listed in the README, and every
/// metric the README's `/metrics` row lists is exported.
#[tokio::test]
async fn readme_lists_the_exported_metrics() {
    let server = Server::sqlite(&[]).await;
    let text = server.metrics_text().await;
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(exported.len() >= 20, "{exported:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for name in &exported {
        assert!(
            readme.contains(&format!("`{name}")),
            "metric {name} is exported but not in the README"
        );
    }
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `/metrics` |"))
        .expect("README's /metrics row");
    for listed in row
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.starts_with("orrery_"))
    {
        let base = listed.split('{').next().unwrap();
        let base = base.strip_suffix("_total").unwrap_or(base);
        assert!(
            exported.contains(&base),
            "README lists {listed}, which /metrics does not export"
        );
    }
}
