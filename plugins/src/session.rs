//! `session`: groups a visitor's events into sessions.
//!
//! For an event without a `session_id`, assigns one from its visitor: the
//! cookieless `visitor_id` of `ip_hash` (or, without one, the event's
//! `distinct_id`). A visitor's events belong to the same session until
//! they pause for longer than `inactivity_minutes` (30 by default); the
//! next event then starts a new session. Times are the events' own
//! `timestamp`s. Events that already carry a `session_id` (the JS SDK
//! keeps one per tab) are left as they are.
//!
//! Session ids are UUIDv7 strings. The tracker of open sessions lives in
//! memory, shared by every pipeline of the process (a pipeline is rebuilt
//! when an admin changes it, the sessions go on); a visitor the tracker
//! does not know is looked up in the `sessions` table, so sessions also go
//! on across restarts. The writer keeps that table (start, end, duration,
//! counts, entry and exit page, bounce), writing it every
//! `ingest.sessions_flush_ms`; the tracker covers that lag.
//!
//! Since `visitor_id` rotates with the UTC day, a visit that spans
//! midnight UTC becomes two sessions. Several instances sharing one
//! PostgreSQL database each track their own visitors; a visitor whose
//! requests alternate between instances may get a new session when an
//! instance has not seen the other's latest event yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orrery_core::event::Envelope;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use orrery_core::store::Store;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Registered name.
pub const NAME: &str = "session";

/// Configuration of `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Minutes of inactivity after which a visitor's next event starts a
    /// new session (1 to 1440).
    pub inactivity_minutes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            inactivity_minutes: 30,
        }
    }
}

/// Visitors tracked in memory before expired ones are swept out.
const SWEEP_AT: usize = 100_000;

/// The open sessions of the process, by (project, visitor key).
#[derive(Debug, Default)]
pub struct SessionTracker {
    open: Mutex<HashMap<(Uuid, String), Open>>,
}

#[derive(Debug, Clone)]
struct Open {
    id: String,
    last_seen: i64,
}

impl SessionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `session` plugin.
pub struct SessionPlugin {
    window_ms: i64,
    tracker: Arc<SessionTracker>,
    store: Option<Store>,
}

impl std::fmt::Debug for SessionPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPlugin")
            .field("window_ms", &self.window_ms)
            .finish_non_exhaustive()
    }
}

impl SessionPlugin {
    /// Builds the plugin over the process's `tracker`; with a `store`,
    /// visitors unknown to the tracker are looked up in `sessions`.
    ///
    /// # Errors
    /// [`PluginError::Config`] when `inactivity_minutes` is out of range.
    pub fn from_config(
        config: SessionConfig,
        tracker: Arc<SessionTracker>,
        store: Option<Store>,
    ) -> Result<Self, PluginError> {
        if !(1..=1440).contains(&config.inactivity_minutes) {
            return Err(PluginError::Config {
                plugin: NAME.to_owned(),
                field: "inactivity_minutes".to_owned(),
                reason: "must be between 1 and 1440".to_owned(),
            });
        }
        Ok(Self {
            window_ms: i64::try_from(config.inactivity_minutes).unwrap_or(30) * 60_000,
            tracker,
            store,
        })
    }

    /// Loads into the tracker the recent sessions of visitors it does not
    /// know, from the `sessions` table.
    async fn recall(&self, batch: &[Envelope]) -> Result<(), PluginError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut wanted: HashMap<Uuid, (HashSet<String>, i64)> = HashMap::new();
        {
            let open = self.tracker.lock();
            for env in batch {
                let e = &env.event;
                if e.session_id.is_some() {
                    continue;
                }
                let Some(v) = e.visitor_id.as_deref() else {
                    continue;
                };
                if open.contains_key(&(e.project_id, format!("v:{v}"))) {
                    continue;
                }
                let entry = wanted
                    .entry(e.project_id)
                    .or_insert_with(|| (HashSet::new(), i64::MAX));
                entry.0.insert(v.to_owned());
                entry.1 = entry.1.min(e.timestamp);
            }
        }
        for (project, (visitors, earliest)) in wanted {
            let visitors: Vec<String> = visitors.into_iter().collect();
            let found = store
                .recent_sessions(project, &visitors, earliest - self.window_ms)
                .await
                .map_err(|e| PluginError::Failed {
                    plugin: NAME.to_owned(),
                    reason: format!("looking up recent sessions: {e}"),
                })?;
            let mut open = self.tracker.lock();
            for (visitor, session_id, ended_at) in found {
                open.entry((project, format!("v:{visitor}")))
                    .or_insert(Open {
                        id: session_id,
                        last_seen: ended_at,
                    });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for SessionPlugin {
    fn name(&self) -> &str {
        NAME
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        self.recall(batch).await?;
        // In time order, so that a batch sent late by an SDK splits at the
        // same pauses as events sent one by one.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| batch[i].event.timestamp);
        let mut open = self.tracker.lock();
        for i in order {
            let e = &mut batch[i].event;
            if e.session_id.is_some() {
                continue;
            }
            let key = match (&e.visitor_id, &e.distinct_id) {
                (Some(v), _) => format!("v:{v}"),
                (None, Some(d)) => format!("d:{d}"),
                (None, None) => continue,
            };
            let t = e.timestamp;
            let slot = open.entry((e.project_id, key)).or_insert_with(|| Open {
                id: String::new(),
                last_seen: i64::MIN,
            });
            if slot.id.is_empty() || t > slot.last_seen.saturating_add(self.window_ms) {
                slot.id = Uuid::now_v7().to_string();
            }
            slot.last_seen = slot.last_seen.max(t);
            e.session_id = Some(slot.id.clone());
        }
        if open.len() > SWEEP_AT {
            let horizon = orrery_core::event::now_ms() - self.window_ms;
            open.retain(|_, o| o.last_seen >= horizon);
            if open.len() > SWEEP_AT {
                // Still too many live visitors: forget them all; the next
                // event of each finds its session in the table again.
                open.clear();
            }
        }
        Ok(vec![Verdict::Keep; batch.len()])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orrery_core::event::EventBuilder;
    use serde_json::json;

    use super::*;

    const T0: i64 = 1_795_430_000_000;

    fn env(visitor: Option<&str>, t: i64, session: Option<&str>) -> Envelope {
        let mut event = EventBuilder::new("pageview").at(t).received_at(t);
        if let Some(s) = session {
            event = event.session(s);
        }
        if let Some(v) = visitor {
            event = event.visitor(v);
        }
        event.envelope()
    }

    fn plugin(minutes: u64) -> SessionPlugin {
        SessionPlugin::from_config(
            SessionConfig {
                inactivity_minutes: minutes,
            },
            Arc::new(SessionTracker::new()),
            None,
        )
        .unwrap()
    }

    #[test]
    fn config_parses_and_rejects_unknown_and_bad_fields() {
        let c: SessionConfig = serde_json::from_value(json!({"inactivity_minutes": 10})).unwrap();
        assert_eq!(c.inactivity_minutes, 10);
        let err = serde_json::from_value::<SessionConfig>(json!({"timeout": 1})).unwrap_err();
        assert!(err.to_string().contains("timeout"));
        let err = SessionPlugin::from_config(
            SessionConfig {
                inactivity_minutes: 0,
            },
            Arc::new(SessionTracker::new()),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("inactivity_minutes"), "{err}");
    }

    #[tokio::test]
    async fn a_pause_longer_than_the_window_starts_a_new_session() {
        let p = plugin(30);
        let min = 60_000;
        let mut batch = vec![
            env(Some("a"), T0, None),
            env(Some("a"), T0 + 29 * min, None),
            env(Some("b"), T0, None),
            // 31 minutes after the previous event of `a`.
            env(Some("a"), T0 + 60 * min, None),
        ];
        let verdicts = p.process(&mut batch).await.unwrap();
        assert!(verdicts.iter().all(|v| *v == Verdict::Keep));
        let s: Vec<&str> = batch
            .iter()
            .map(|e| e.event.session_id.as_deref().unwrap())
            .collect();
        assert_eq!(s[0], s[1]);
        assert_ne!(s[0], s[2], "another visitor");
        assert_ne!(s[1], s[3], "after a pause");
        // The tracker outlives the batch: a later batch continues `a`'s
        // latest session.
        let mut later = vec![env(Some("a"), T0 + 70 * min, None)];
        p.process(&mut later).await.unwrap();
        assert_eq!(later[0].event.session_id.as_deref(), Some(s[3]));
    }

    #[tokio::test]
    async fn out_of_order_batches_split_by_time() {
        let p = plugin(30);
        let min = 60_000;
        let mut batch = vec![
            env(Some("a"), T0 + 100 * min, None),
            env(Some("a"), T0, None),
            env(Some("a"), T0 + 10 * min, None),
        ];
        p.process(&mut batch).await.unwrap();
        let s: Vec<_> = batch.iter().map(|e| e.event.session_id.clone()).collect();
        assert_eq!(s[1], s[2]);
        assert_ne!(s[0], s[1]);
    }

    #[tokio::test]
    async fn given_session_ids_and_anonymous_events_are_left_alone() {
        let p = plugin(30);
        let mut batch = vec![env(Some("a"), T0, Some("sdk-1")), env(None, T0, None)];
        p.process(&mut batch).await.unwrap();
        assert_eq!(batch[0].event.session_id.as_deref(), Some("sdk-1"));
        assert_eq!(batch[1].event.session_id, None);
    }
}
