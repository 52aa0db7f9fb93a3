//! What every test says to a gateway, whether it runs as the real binary
//! ([`crate::Server`]) or in-process ([`crate::InProcess`]): one request,
//! and the JSON calls built on it.

use serde_json::Value;

use crate::server::InitKeys;

/// A gateway's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A gateway to talk to. Implementors give [`Api::send`] and the first
/// project's keys; the calls tests repeat are built on them.
#[allow(async_fn_in_trait)] // test code: the futures are awaited in place
pub trait Api {
    /// Sends one request with `headers` and an optional raw body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer;

    /// The keys of the first project (`orrery init`).
    fn keys(&self) -> &InitKeys;

    /// One API call with `key` in `X-API-Key` and an optional JSON body;
    /// answers the status and the JSON body (`Null` when it is not JSON).
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let answer = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).expect("JSON");
                let headers = [("X-API-Key", key), ("Content-Type", "application/json")];
                self.send(method, path, &headers, Some(bytes)).await
            }
            None => self.send(method, path, &[("X-API-Key", key)], None).await,
        };
        (answer.status, answer.json())
    }

    /// `GET path` with `key`.
    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call("GET", path, key, None).await
    }

    /// `POST path` with `key` and a JSON body.
    async fn post_json(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, key, Some(body)).await
    }

    /// A call on the first project, `/api/v1/projects/{id}{path}`, with its
    /// admin secret key.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let keys = self.keys();
        let path = format!("/api/v1/projects/{}{path}", keys.project_id);
        self.call(method, &path, &keys.secret_key, body).await
    }

    /// Sends `body` to `POST /api/v1/events` with `key` and extra
    /// `headers` (`X-Forwarded-For`, `User-Agent`...).
    async fn post_events(&self, key: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let mut all = vec![("X-API-Key", key), ("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        let answer = self.send("POST", "/api/v1/events", &all, Some(bytes)).await;
        (answer.status, answer.json())
    }

    /// Creates a key in `project` with `caller`'s key; `body` is the
    /// request (`{"name":..., "kind":..., "admin":...}`). Answers the key's
    /// id and its plain text (shown once).
    ///
    /// # Panics
    /// When the gateway does not answer 201.
    async fn create_key(&self, caller: &str, project: &str, body: Value) -> (String, String) {
        let path = format!("/api/v1/projects/{project}/keys");
        let (status, answer) = self.post_json(&path, caller, body.clone()).await;
        assert_eq!(status, 201, "creating key {body}: {answer}");
        let text = |v: &Value| v.as_str().expect("a string in the answer").to_owned();
        (text(&answer["info"]["id"]), text(&answer["key"]))
    }

    /// Creates a project with `caller`'s key; answers its id and the two
    /// keys made with it.
    ///
    /// # Panics
    /// When the gateway does not answer 201.
    async fn create_project(&self, caller: &str, name: &str) -> InitKeys {
        let body = serde_json::json!({ "name": name });
        let (status, answer) = self.post_json("/api/v1/projects", caller, body).await;
        assert_eq!(status, 201, "creating project {name}: {answer}");
        let text = |v: &Value| v.as_str().expect("a string in the answer").to_owned();
        InitKeys {
            project_id: text(&answer["project"]["id"]),
            public_key: text(&answer["public_key"]["key"]),
            secret_key: text(&answer["secret_key"]["key"]),
        }
    }

    /// Every page of the first project's events (newest first) for
    /// `query` (`&name=...`), read `limit` at a time with the admin key.
    async fn all_events(&self, query: &str, limit: u32) -> Vec<Value> {
        let keys = self.keys().clone();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/projects/{}/events?limit={limit}{query}",
                keys.project_id
            );
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path, &keys.secret_key).await;
            assert_eq!(status, 200, "list events: {page}");
            out.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}
