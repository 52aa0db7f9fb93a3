//! What the `user_agent` plugin costs: building the shared parser once,
//! building a plugin, and enriching an event with and without the cache.
//!
//! `cargo bench -p orrery-plugins --bench user_agent` prints the figures.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::hint::black_box;
use std::time::{Duration, Instant};

use orrery_core::event::{Envelope, EventBuilder};
use orrery_core::plugin::Plugin;
use orrery_plugins::user_agent::{UserAgent, UserAgentConfig, warm_up};

/// Common user agents; `{}` becomes a build number, so that each one
/// yields as many distinct strings as needed, all parsed the same way.
const TEMPLATES: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.{}.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.{}.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.{}) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.{}.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.{}.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.{}; +http://www.google.com/bot.html)",
];

fn batch(n: usize, distinct: bool) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            let number = if distinct { i } else { 0 };
            let ua = TEMPLATES[i % TEMPLATES.len()].replace("{}", &number.to_string());
            EventBuilder::new("pageview")
                .received_at(1_795_430_000_000)
                .field("user_agent", ua)
                .envelope()
        })
        .collect()
}

fn per(elapsed: Duration, n: usize) -> String {
    format!("{:.2} µs", elapsed.as_secs_f64() * 1e6 / n as f64)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // 1. The shared parser: compiled by the first call in the process.
    let start = Instant::now();
    warm_up().unwrap();
    println!("parser build (once per process): {:?}", start.elapsed());

    // 2. Building a plugin afterwards: what a pipeline rebuild pays.
    let n = 10_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(UserAgent::from_config(UserAgentConfig::default()).unwrap());
    }
    println!("plugin build: {} each", per(start.elapsed(), n));

    // 3. Uncached: every event has a user agent never seen before.
    let n = 20_000;
    let uncached = UserAgent::from_config(UserAgentConfig {
        cache_size: 0,
        ..UserAgentConfig::default()
    })
    .unwrap();
    let mut events = batch(n, true);
    let start = Instant::now();
    rt.block_on(uncached.process(&mut events)).unwrap();
    println!("per event, uncached (parse): {}", per(start.elapsed(), n));

    // 4. Cached: a few user agents repeated, as in real traffic.
    let cached = UserAgent::from_config(UserAgentConfig::default()).unwrap();
    let mut events = batch(n, false);
    rt.block_on(cached.process(&mut events)).unwrap();
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        rt.block_on(cached.process(&mut events)).unwrap();
    }
    println!(
        "per event, cached (hash lookup): {}",
        per(start.elapsed(), n * rounds)
    );
}
