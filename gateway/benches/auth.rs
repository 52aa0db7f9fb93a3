//! What authentication costs a request: checking an access token (HS256
//! signature, claims), the whole check with the login in the revocation
//! cache (what nearly every request pays), the CSRF check, a rate-limit
//! token, and what a login costs (argon2id hash and verify).
//!
//! `cargo bench -p orrery-gateway --bench auth` prints the figures.

#![allow(clippy::unwrap_used)] // benchmark code: a failed unwrap fails the run
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use orrery_core::config::{Config, Secret};
use orrery_core::store::Store;
use orrery_gateway::accounts::Accounts;
use orrery_gateway::rate_limit::{Class, RateLimiter};

fn report(what: &str, n: u32, started: Instant) {
    let per = started.elapsed() / n;
    println!("{what:<58} {:>9.2} µs", per.as_secs_f64() * 1e6);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.secrets.ip_hash_key = Some(Secret::new("k".repeat(64)));
        let store = Store::connect(&config).await.unwrap();
        store.migrate().await.unwrap();
        let accounts = Arc::new(Accounts::new(&config));

        let started = Instant::now();
        let hash = accounts
            .hash_password("correct horse battery")
            .await
            .unwrap();
        report("argon2id hash (19 MiB, t=2, p=1)", 1, started);
        let started = Instant::now();
        for _ in 0..5 {
            assert!(
                accounts
                    .verify_password(Some(&hash), "correct horse battery")
                    .await
                    .unwrap()
            );
        }
        report("argon2id verify", 5, started);

        let account = store
            .create_account("bench@x.io", &hash, false, false)
            .await
            .unwrap();
        let tokens = accounts.start_login(&store, account.id).await.unwrap();
        let n = 200_000;
        let started = Instant::now();
        for _ in 0..n {
            black_box(accounts.verify_access(black_box(&tokens.access)).unwrap());
        }
        report("access token: signature and claims (HS256)", n, started);
        // The whole check; the login read once, then from the cache.
        accounts.user(&store, &tokens.access, false).await.unwrap();
        let started = Instant::now();
        for _ in 0..n {
            black_box(
                accounts
                    .user(&store, black_box(&tokens.access), false)
                    .await
                    .unwrap(),
            );
        }
        report("access token: whole check, login cached", n, started);
        let csrf = accounts.csrf_token(tokens.session);
        let started = Instant::now();
        for _ in 0..n {
            assert!(accounts.csrf_ok(tokens.session, black_box(&csrf)));
        }
        report("CSRF token check", n, started);
        let limiter = RateLimiter::new(&config.rate_limit);
        let started = Instant::now();
        for i in 0..n {
            black_box(limiter.take(
                Class::Ingest,
                if i % 2 == 0 {
                    "203.0.113.7"
                } else {
                    "198.51.100.1"
                },
            ));
        }
        report("rate limit: one token", n, started);
    });
}
