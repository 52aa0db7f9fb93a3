//! `ip_hash`: replaces the client IP by a daily-rotating keyed hash.
//!
//! Reads the client IP (and user agent) from the request context, which is
//! never stored, and writes `ip_hash` and `visitor_id` on the event:
//! - `ip_hash` = HMAC-SHA256(day key, project id ‖ IP), truncated to 128
//!   bits and hex-encoded;
//! - `visitor_id` = HMAC-SHA256(day key, project id ‖ IP ‖ user agent),
//!   the same way: a cookieless visitor id.
//!
//! The day key is HMAC-SHA256(secret, UTC date of `received_at`), so the
//! same visitor gets a new hash every UTC day and hashes of different days
//! cannot be joined, not even by someone who holds today's key. Unique
//! visitors are therefore exact within one UTC day and over-counted across
//! days (a visitor seen on two days counts twice). The project id is mixed
//! in so that hashes cannot be joined across projects.
//!
//! This plugin is mandatory and always first in a pipeline, so no raw IP
//! reaches any other plugin's output or the store.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate};
use hmac::{Hmac, Mac};
use orrery_core::event::Envelope;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Configuration of `ip_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpHashConfig {
    /// Also derive the cookieless `visitor_id` from IP and user agent.
    pub visitor_id: bool,
}

impl Default for IpHashConfig {
    fn default() -> Self {
        Self { visitor_id: true }
    }
}

/// The `ip_hash` plugin.
pub struct IpHash {
    secret: Vec<u8>,
    config: IpHashConfig,
    /// The last day's HMAC, already keyed: cloning it skips the two key
    /// blocks an HMAC would otherwise hash per event.
    day_key: Mutex<Option<(NaiveDate, HmacSha256)>>,
}

impl std::fmt::Debug for IpHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpHash")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the hashes of one event depend on.
struct Memo {
    day: NaiveDate,
    project: uuid::Uuid,
    ip: std::net::IpAddr,
    ua: String,
}

/// Registered name.
pub const NAME: &str = "ip_hash";

impl IpHash {
    /// Builds the plugin from the instance secret and its config.
    ///
    /// # Errors
    /// [`PluginError::Config`] when the secret is shorter than 16 bytes.
    pub fn from_config(secret: &[u8], config: IpHashConfig) -> Result<Self, PluginError> {
        if secret.len() < 16 {
            return Err(PluginError::Config {
                plugin: NAME.to_owned(),
                field: "secrets.ip_hash_key".to_owned(),
                reason: "must be at least 16 bytes".to_owned(),
            });
        }
        Ok(Self {
            secret: secret.to_vec(),
            config,
            day_key: Mutex::new(None),
        })
    }

    fn key_for(&self, day: NaiveDate) -> HmacSha256 {
        let mut cached = self.day_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, k)) = &*cached
            && *d == day
        {
            return k.clone();
        }
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(b"orrery/ip_hash/");
        mac.update(day.to_string().as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let keyed = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
        *cached = Some((day, keyed.clone()));
        keyed
    }
}

fn keyed_hex(key: &HmacSha256, parts: &[&[u8]]) -> String {
    let mut mac = key.clone();
    for part in parts {
        // Length-prefix each part so that ("ab","c") != ("a","bc").
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[async_trait]
impl Plugin for IpHash {
    fn name(&self) -> &str {
        NAME
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        // The events of a batch mostly share project, IP, user agent and
        // day: the hashes of the previous event are reused when they do.
        let mut key: Option<(NaiveDate, HmacSha256)> = None;
        let mut last: Option<(Memo, String, Option<String>)> = None;
        for env in batch.iter_mut() {
            let Some(ip) = env.context.ip else { continue };
            let day = DateTime::from_timestamp_millis(env.event.received_at)
                .unwrap_or_default()
                .date_naive();
            let ua = if self.config.visitor_id {
                env.event
                    .user_agent
                    .as_deref()
                    .or(env.context.user_agent.as_deref())
                    .unwrap_or("")
            } else {
                ""
            };
            if let Some((m, ip_hash, visitor)) = &last
                && m.day == day
                && m.project == env.event.project_id
                && m.ip == ip
                && m.ua == ua
            {
                env.event.ip_hash = Some(ip_hash.clone());
                if visitor.is_some() {
                    env.event.visitor_id.clone_from(visitor);
                }
                continue;
            }
            let mac = match &key {
                Some((d, k)) if *d == day => k,
                _ => &key.insert((day, self.key_for(day))).1,
            };
            let project = env.event.project_id.as_bytes();
            let ip_text = ip.to_canonical().to_string();
            let ip_hash = keyed_hex(mac, &[project, ip_text.as_bytes()]);
            let visitor = self
                .config
                .visitor_id
                .then(|| keyed_hex(mac, &[project, ip_text.as_bytes(), ua.as_bytes()]));
            env.event.ip_hash = Some(ip_hash.clone());
            if visitor.is_some() {
                env.event.visitor_id.clone_from(&visitor);
            }
            let memo = Memo {
                day,
                project: env.event.project_id,
                ip,
                ua: ua.to_owned(),
            };
            last = Some((memo, ip_hash, visitor));
        }
        Ok(vec![Verdict::Keep; batch.len()])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orrery_core::event::{EventBuilder, RequestContext};
    use uuid::Uuid;

    use super::*;

    const DAY1: i64 = 1_795_392_000_000; // 2026-11-23T00:00:00Z
    const DAY2: i64 = DAY1 + 86_400_000;

    fn envelope(ip: &str, at: i64, project: Uuid) -> Envelope {
        EventBuilder::new("pageview")
            .project(project)
            .received_at(at)
            .ip(ip)
            .header_user_agent("Mozilla/5.0")
            .envelope()
    }

    #[test]
    fn config_parses_and_rejects_unknown_fields() {
        let c: IpHashConfig =
            serde_json::from_value(serde_json::json!({"visitor_id": false})).unwrap();
        assert!(!c.visitor_id);
        let err =
            serde_json::from_value::<IpHashConfig>(serde_json::json!({"salt": 1})).unwrap_err();
        assert!(err.to_string().contains("salt"));
    }

    #[test]
    fn short_secret_is_rejected() {
        assert!(IpHash::from_config(b"short", IpHashConfig::default()).is_err());
    }

    #[tokio::test]
    async fn hashes_are_stable_within_a_day_and_rotate_across_days() {
        let plugin = IpHash::from_config(&[7u8; 32], IpHashConfig::default()).unwrap();
        let p = Uuid::now_v7();
        let mut batch = vec![
            envelope("203.0.113.9", DAY1 + 1000, p),
            envelope("203.0.113.9", DAY1 + 80_000_000, p),
            envelope("203.0.113.9", DAY2 + 1000, p),
            envelope("203.0.113.10", DAY1 + 1000, p),
            envelope("203.0.113.9", DAY1 + 1000, Uuid::now_v7()),
        ];
        let verdicts = plugin.process(&mut batch).await.unwrap();
        assert!(verdicts.iter().all(|v| *v == Verdict::Keep));
        let h: Vec<&str> = batch
            .iter()
            .map(|e| e.event.ip_hash.as_deref().unwrap())
            .collect();
        assert_eq!(h[0], h[1], "same day, same IP");
        assert_ne!(h[0], h[2], "next day rotates");
        assert_ne!(h[0], h[3], "other IP");
        assert_ne!(h[0], h[4], "other project");
        assert_eq!(h[0].len(), 32);
        assert!(!h[0].contains("203.0.113"));
        assert!(batch[0].event.visitor_id.is_some());
        assert_ne!(batch[0].event.visitor_id, batch[0].event.ip_hash);
    }

    #[tokio::test]
    async fn hashes_are_the_documented_hmac_and_reused_only_for_the_same_inputs() {
        let plugin = IpHash::from_config(&[7u8; 32], IpHashConfig::default()).unwrap();
        let mut other_ua = envelope("203.0.113.9", DAY1 + 5, Uuid::nil());
        other_ua.context = Arc::new(RequestContext {
            user_agent: Some("curl/8".into()),
            ..(*other_ua.context).clone()
        });
        let mut batch = vec![
            envelope("203.0.113.9", DAY1 + 1, Uuid::nil()),
            envelope("203.0.113.9", DAY1 + 2, Uuid::nil()),
            other_ua,
            envelope("203.0.113.9", DAY1 + 3, Uuid::nil()),
        ];
        plugin.process(&mut batch).await.unwrap();
        // HMAC-SHA256(HMAC-SHA256(secret, "orrery/ip_hash/2026-11-23"),
        // len ‖ project ‖ len ‖ ip), first 16 bytes (computed with Python's hmac).
        assert_eq!(
            batch[0].event.ip_hash.as_deref(),
            Some("b73a7de77fd76a0d2aba1c39f3604832")
        );
        let visitors: Vec<_> = batch.iter().map(|e| e.event.visitor_id.clone()).collect();
        assert_eq!(visitors[0], visitors[1]);
        assert_ne!(
            visitors[1], visitors[2],
            "another user agent is another visitor"
        );
        assert_eq!(visitors[3], visitors[0]);
        assert!(
            batch
                .iter()
                .all(|e| e.event.ip_hash == batch[0].event.ip_hash)
        );
    }

    #[tokio::test]
    async fn events_without_ip_are_kept_unhashed() {
        let plugin = IpHash::from_config(&[7u8; 32], IpHashConfig::default()).unwrap();
        let mut env = envelope("203.0.113.9", DAY1, Uuid::nil());
        env.context = Arc::new(RequestContext::default());
        let mut batch = vec![env];
        assert_eq!(
            plugin.process(&mut batch).await.unwrap(),
            vec![Verdict::Keep]
        );
        assert!(batch[0].event.ip_hash.is_none());
    }
}
