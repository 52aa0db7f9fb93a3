//! The SQL endpoint end to end, on each backend, through the real binary:
//! real questions answered from the caller's rows only, then injection
//! attempts (other projects' rows, other tables, writes, PRAGMA and
//! ATTACH, functions that touch files or sleep, stacked statements,
//! comments, unicode look-alikes, a query that runs forever), each a 400
//! that says why, with every row of every project unchanged afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use orrery_tests::{Api, Backend, Server, each_backend};
use serde_json::{Value, json};

async fn sql(server: &Server, project: &str, key: &str, query: &str) -> (u16, Value) {
    server
        .call(
            "POST",
            &format!("/api/v1/projects/{project}/sql"),
            key,
            Some(json!({ "query": query })),
        )
        .await
}

async fn send(server: &Server, key: &str, events: Vec<Value>) {
    let (status, body) = server
        .post_events(key, &[], json!({ "batch": events }))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn queries_see_only_their_project_and_every_escape_is_refused() {
    each_backend("sql", &[], async |server| {
        let keys = server.keys.clone();
        let (p, k) = (keys.project_id.clone(), keys.secret_key.clone());
        let other = server.create_project(&k, "other").await;
        let mine: Vec<Value> = (0..30)
            .map(|i| {
                json!({
                    "event": if i % 3 == 0 { "signup" } else { "pageview" },
                    "distinct_id": format!("u{}", i % 7),
                    "session_id": format!("s{}", i % 5),
                    "url": format!("https://shop.test/p{}", i % 4),
                    "properties": {"plan": if i % 2 == 0 { "pro" } else { "team" }},
                })
            })
            .collect();
        send(server, &keys.public_key, mine).await;
        let theirs: Vec<Value> = (0..12)
            .map(|i| json!({"event": "secret", "distinct_id": format!("x{i}"), "properties": {"token": "hunter2"}}))
            .collect();
        send(server, &other.public_key, theirs).await;

        // Real questions.
        let (status, a) = sql(server, &p, &k, "SELECT count(*) AS n FROM events").await;
        assert_eq!(status, 200, "{a}");
        assert_eq!((a["columns"].clone(), a["rows"].clone()), (json!(["n"]), json!([[30]])));
        let (status, a) = sql(
            server,
            &p,
            &k,
            "SELECT name, count(*) AS n, count(DISTINCT distinct_id) AS people FROM events \
             GROUP BY name ORDER BY name",
        )
        .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["rows"], json!([["pageview", 20, 7], ["signup", 10, 7]]), "{a}");
        let (status, a) = sql(
            server,
            &p,
            &k,
            "WITH plans AS (SELECT properties ->> 'plan' AS plan FROM events) \
             SELECT plan, count(*) FROM plans GROUP BY plan ORDER BY plan",
        )
        .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["rows"], json!([["pro", 15], ["team", 15]]), "{a}");
        // A join, a subquery and a comment.
        let (status, a) = sql(
            server,
            &p,
            &k,
            "SELECT count(*) FROM events e /* ; DELETE FROM events */ \
             WHERE e.session_id IN (SELECT session_id FROM events WHERE name = 'signup') -- ; DROP",
        )
        .await;
        assert_eq!(status, 200, "{a}");
        assert!(a["rows"][0][0].as_i64().unwrap() > 0, "{a}");
        // The row limit.
        let (status, a) = server
            .call(
                "POST",
                &format!("/api/v1/projects/{p}/sql"),
                &k,
                Some(json!({"query": "SELECT id, name FROM events", "max_rows": 2})),
            )
            .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!((a["rows"].as_array().unwrap().len(), &a["truncated"]), (2, &json!(true)));
        assert_eq!(a["rows"][0][0].as_str().unwrap().len(), 36, "ids as UUID text: {a}");

        // Escapes: each a 400 `invalid_query` (or `query_timeout`) that
        // says why.
        let other_id = other.project_id.as_str();
        let file_fn = match server.backend {
            Backend::Sqlite => "SELECT load_extension('/tmp/evil')",
            Backend::Postgres => "SELECT pg_read_file('/etc/passwd')",
        };
        let attempts: Vec<(String, &str)> = vec![
            (format!("SELECT * FROM events WHERE project_id = '{other_id}'"), ""),
            ("SELECT * FROM api_keys".into(), "unknown table `api_keys`"),
            ("SELECT name FROM projects".into(), "unknown table `projects`"),
            ("SELECT * FROM main.events".into(), "without a schema"),
            ("SELECT * FROM public.events".into(), "without a schema"),
            ("SELECT name FROM events UNION SELECT key_hash FROM api_keys".into(), "unknown table"),
            ("SELECT * FROM sqlite_master".into(), "unknown table"),
            ("SELECT * FROM pg_catalog.pg_tables".into(), "without a schema"),
            ("SELECT * FROM pragma_table_info('events')".into(), "table-valued"),
            ("DELETE FROM events".into(), "only a SELECT"),
            ("UPDATE events SET name = 'x'".into(), "only a SELECT"),
            ("INSERT INTO events (name) VALUES ('x')".into(), "only a SELECT"),
            ("DROP TABLE events".into(), "only a SELECT"),
            ("PRAGMA table_info(events)".into(), ""),
            ("ATTACH DATABASE '/tmp/x.db' AS x".into(), ""),
            (file_fn.into(), "is not available"),
            ("SELECT readfile('/etc/passwd')".into(), "function `readfile`"),
            ("SELECT pg_sleep(60)".into(), "function `pg_sleep`"),
            ("SELECT 1; DELETE FROM events".into(), "2 statements"),
            ("SELECT * FROM events --\n; DELETE FROM events".into(), "2 statements"),
            ("SELECT * FROM \u{0435}vents".into(), "unknown table"),
            ("SELECT * FROM ev\u{200b}ents".into(), ""),
            ("\u{ff33}\u{ff25}\u{ff2c}\u{ff25}\u{ff23}\u{ff34} 1".into(), ""),
            ("SELECT * FROM \"events\u{202e}\"".into(), "unknown table"),
            ("WITH events AS (SELECT * FROM api_keys) SELECT * FROM events".into(), "hide the view"),
            (
                "SELECT * FROM (WITH projects AS (SELECT 1 AS x) SELECT * FROM projects) q, projects"
                    .into(),
                "",
            ),
            ("SELECT * INTO stolen FROM events".into(), "SELECT INTO"),
            ("SELECT name FROM events FOR UPDATE".into(), ""),
        ];
        for (query, why) in &attempts {
            let (status, body) = sql(server, &p, &k, query).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["code"], "invalid_query", "{query}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(why), "{query}: {message}");
            assert!(!message.contains("hunter2"));
        }

        // An answer over 16 MiB is refused, not sent.
        let concat = match server.backend {
            Backend::Sqlite => "group_concat(n)",
            Backend::Postgres => "string_agg(n::text, ',')",
        };
        let (status, body) = sql(
            server,
            &p,
            &k,
            &format!(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r \
                 WHERE n < 2500000) SELECT {concat} FROM r"
            ),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("larger than 16777216 bytes"), "{body}");

        // A query that runs forever is stopped at the time limit.
        let started = std::time::Instant::now();
        let (status, body) = sql(
            server,
            &p,
            &k,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
             SELECT count(*) FROM r",
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (400, Some("query_timeout")), "{body}");
        assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());

        // Nothing changed: every event of both projects is there.
        let (_, a) = sql(server, &p, &k, "SELECT count(*) FROM events").await;
        assert_eq!(a["rows"], json!([[30]]));
        let (status, a) = sql(
            server,
            other_id,
            &other.secret_key,
            "SELECT count(*), min(properties ->> 'token') FROM events",
        )
        .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["rows"], json!([[12, "hunter2"]]));
        // The engine still answers after the timeout.
        let (status, _) = sql(server, &p, &k, "SELECT 1").await;
        assert_eq!(status, 200);

        // Another project's key: 404, as a missing project; the public
        // key: 403; a body without `query`: 400.
        let (status, _) = sql(server, &p, &other.secret_key, "SELECT 1").await;
        assert_eq!(status, 404);
        let (status, _) = sql(server, &p, &keys.public_key, "SELECT 1").await;
        assert_eq!(status, 403);
        let (status, _) = sql(server, &p, "", "SELECT 1").await;
        assert_eq!(status, 401);
        let (status, _) = sql(server, "00000000-0000-0000-0000-000000000000", &k, "SELECT 1").await;
        assert_eq!(status, 404);
        let (status, body) = server
            .call("POST", &format!("/api/v1/projects/{p}/sql"), &k, Some(json!({})))
            .await;
        assert_eq!(status, 400, "{body}");
    })
    .await;
}
