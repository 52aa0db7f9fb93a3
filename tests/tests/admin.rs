//! Projects and keys through the admin API: who may do what, revocation
//! and rotation taking effect at once.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use orrery_tests::{Api, InProcess};
use serde_json::{Value, json};

async fn ingest(server: &impl Api, key: &str) -> (u16, Value) {
    server
        .call("POST", "/api/v1/events", key, Some(json!({"event": "k"})))
        .await
}

#[tokio::test]
async fn wrong_revoked_and_rotated_keys() {
    let server = InProcess::sqlite().await;
    let (sk, pk, pid) = (
        server.keys.secret_key.clone(),
        server.keys.public_key.clone(),
        server.keys.project_id.clone(),
    );
    // Wrong keys.
    for bad in ["pk_doesnotexist000000000000000000000", "nonsense", ""] {
        let (status, body) = ingest(&server, bad).await;
        assert_eq!(status, 401, "{bad:?}");
        assert!(
            ["invalid_key", "missing_key", "unauthorized"]
                .contains(&body["code"].as_str().unwrap()),
            "{bad:?}: {body}"
        );
    }
    // A public key cannot read or administer.
    let (status, body) = server
        .call("GET", &format!("/api/v1/projects/{pid}/events"), &pk, None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden");
    let (status, _) = server.call("GET", "/api/v1/projects", &pk, None).await;
    assert_eq!(status, 403);

    // Create a public key, use it, revoke it.
    let (status, created) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/keys"),
            &sk,
            Some(json!({"name": "website", "kind": "public"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pk_"));
    assert_eq!(created["info"]["prefix"], &key[..11]);
    let key_id = created["info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ingest(&server, &key).await.0, 200);
    let (status, listed) = server
        .call("GET", &format!("/api/v1/projects/{pid}/keys"), &sk, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 3);
    assert!(
        !listed.to_string().contains(&key),
        "the key itself is never listed"
    );
    let (status, revoked) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/keys/{key_id}/revoke"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(revoked["active"], false);
    let (status, body) = ingest(&server, &key).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "key_revoked");

    // Rotate the original public key without grace: old dead, new works.
    let pk_id = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "public" && pk.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, rotated) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/keys/{pk_id}/rotate"),
            &sk,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_pk = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_pk, pk);
    assert_eq!(ingest(&server, &pk).await.0, 401);
    assert_eq!(ingest(&server, &new_pk).await.0, 200);

    // Rotate with grace: both work for now.
    let new_id = rotated["info"]["id"].as_str().unwrap().to_owned();
    let (status, graced) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/keys/{new_id}/rotate"),
            &sk,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        ingest(&server, &new_pk).await.0,
        200,
        "old key works during grace"
    );
    assert_eq!(
        ingest(&server, graced["key"].as_str().unwrap()).await.0,
        200
    );
    // Rotating a revoked key is refused.
    let (status, _) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/keys/{key_id}/rotate"),
            &sk,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn projects_crud_and_scoping() {
    let server = InProcess::sqlite().await;
    let admin = server.keys.secret_key.clone();
    let (status, created) = server
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let shop = created["project"]["id"].as_str().unwrap().to_owned();
    let shop_sk = created["secret_key"]["key"].as_str().unwrap().to_owned();
    let shop_pk = created["public_key"]["key"].as_str().unwrap().to_owned();
    assert!(shop_sk.starts_with("sk_") && shop_pk.starts_with("pk_"));

    // Bad names.
    for name in ["", "   ", &"x".repeat(101)] {
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/projects",
                &admin,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "invalid_body");
        assert!(
            body["message"].as_str().unwrap().contains("`name`"),
            "{body}"
        );
    }
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The project's own secret key sees only its project and cannot create.
    let (_, list) = server.call("GET", "/api/v1/projects", &shop_sk, None).await;
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);
    let (_, list) = server.call("GET", "/api/v1/projects", &admin, None).await;
    assert_eq!(list["projects"].as_array().unwrap().len(), 2);
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/projects",
            &shop_sk,
            Some(json!({"name": "n"})),
        )
        .await;
    assert_eq!(status, 403);
    let other = &server.keys().project_id;
    let (status, _) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{other}/events"),
            &shop_sk,
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "to a project key another project does not exist"
    );
    let (status, _) = server
        .call(
            "POST",
            &format!("/api/v1/projects/{shop}/keys"),
            &shop_sk,
            Some(json!({"name": "x", "kind": "secret", "admin": true})),
        )
        .await;
    assert_eq!(status, 403, "only admins make admin keys");

    // Events go to the key's project.
    let (status, _) = ingest(&server, &shop_pk).await;
    assert_eq!(status, 200);
    let (_, page) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{shop}/events"),
            &shop_sk,
            None,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let (_, page) = server
        .call(
            "GET",
            &format!("/api/v1/projects/{other}/events"),
            &admin,
            None,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);

    // Rename, get.
    let (status, renamed) = server
        .call(
            "PATCH",
            &format!("/api/v1/projects/{shop}"),
            &shop_sk,
            Some(json!({"name": "Shop EU"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "Shop EU");
    let (_, got) = server
        .call("GET", &format!("/api/v1/projects/{shop}"), &admin, None)
        .await;
    assert_eq!(got["name"], "Shop EU");

    // Delete: not the admin's own project; then the shop, whose keys die.
    let (status, body) = server
        .call("DELETE", &format!("/api/v1/projects/{other}"), &admin, None)
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "project_in_use");
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/api/v1/projects/{shop}"),
            &shop_sk,
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .call("DELETE", &format!("/api/v1/projects/{shop}"), &admin, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(ingest(&server, &shop_pk).await.0, 401);
    let (status, body) = server
        .call("GET", &format!("/api/v1/projects/{shop}"), &admin, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    let (status, body) = server
        .call("GET", "/api/v1/projects/not-a-uuid", &admin, None)
        .await;
    assert_eq!(status, 400, "{body}");
}
