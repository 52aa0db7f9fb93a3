//! What the enrichment pipeline costs per event: the default pipeline
//! (ip_hash, geoip, user_agent, referrer, session) against `ip_hash` alone
//! and each plugin on its own, over batches of 100 realistic events
//! (varied public IPs, browser user agents, search and social referrers,
//! UTM-tagged URLs, many visitors).
//!
//! `cargo bench -p orrery-plugins --bench pipeline` prints µs per event
//! (median of the rounds).

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
mod common;
use common::stages;

use std::path::PathBuf;
use std::time::Duration;

use orrery_core::event::{Envelope, EventBuilder};
use orrery_core::metrics::PluginMetrics;
use orrery_core::pipeline::Pipeline;
use orrery_plugins::{Registry, RegistryConfig};
use serde_json::json;
use uuid::Uuid;

const BATCH: usize = 100;
const ROUNDS: usize = 400;

const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: &[&str] = &[
    "https://www.google.com/search?q=orrery",
    "https://news.ycombinator.com/item?id=1",
    "https://t.co/abc",
    "",
];

fn batch(round: usize) -> Vec<Envelope> {
    let project = Uuid::from_u128(7);
    let now = orrery_core::event::now_ms();
    (0..BATCH)
        .map(|i| {
            let n = round * BATCH + i;
            let ip = match n % 4 {
                0 | 1 => format!("81.2.69.{}", n % 250),
                2 => format!("2a01:4f8::{:x}", n % 4000),
                _ => format!("93.184.{}.{}", (n / 250) % 250, n % 250),
            };
            let url = format!(
                "https://shop.test/docs/page-{}?utm_source=news&utm_campaign=c{}",
                n % 50,
                n % 3
            );
            let mut event = EventBuilder::new("pageview")
                .project(project)
                .received_at(now)
                .field("url", url)
                .field("properties", json!({"plan": "free"}))
                .ip(&ip)
                .header_user_agent(UAS[n % UAS.len()]);
            let r = REFERRERS[n % REFERRERS.len()];
            if !r.is_empty() {
                event = event.field("referrer", r);
            }
            event.envelope()
        })
        .collect()
}

/// Median µs per event of `pipeline` over the rounds.
fn measure(rt: &tokio::runtime::Runtime, pipeline: &Pipeline) -> f64 {
    common::measure(rt, pipeline, (0..ROUNDS).map(batch).collect(), 20)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/geoip-city-test.mmdb");
    let registry = rt.block_on(async {
        orrery_plugins::user_agent::warm_up().unwrap();
        Registry::new(
            &[3u8; 32],
            RegistryConfig {
                timeout: Duration::from_secs(5),
                geoip_database: Some(db),
                geoip_asn_database: None,
            },
            None,
            PluginMetrics::default(),
        )
    });
    println!("batches of {BATCH} events, median of {ROUNDS} rounds, one core");
    let full = measure(&rt, &registry.build(&Registry::default_stages()).unwrap());
    let alone = measure(&rt, &registry.build(&stages(&["ip_hash"])).unwrap());
    println!(
        "{:<34} {:>8.2} µs/event",
        "default pipeline (5 plugins)", full
    );
    println!("{:<34} {:>8.2} µs/event", "ip_hash alone", alone);
    for plugin in ["geoip", "user_agent", "referrer", "session"] {
        let with = measure(&rt, &registry.build(&stages(&["ip_hash", plugin])).unwrap());
        println!(
            "{:<34} {:>8.2} µs/event",
            format!("  {plugin} (over ip_hash)"),
            (with - alone).max(0.0)
        );
    }
}
