//! The live event stream: a project's events as they are committed, after
//! enrichment, pushed to WebSocket subscribers.
//!
//! - [`Hub`]: the in-process fan-out. Ingestion calls [`Hub::committed`]
//!   right after the writer commits; each subscriber has a bounded queue
//!   that publishing fills without ever blocking or awaiting. A subscriber
//!   whose queue would overflow is marked slow and dropped from the hub at
//!   once: its connection closes with 1008 `slow consumer`.
//! - [`bridge`]: several instances on one PostgreSQL. Each commit is
//!   announced with `NOTIFY` (a reference: the instance, the project, the
//!   event ids); every other instance that has subscribers for the project
//!   reads those rows back and publishes them to its own hub.
//! - [`session`]: one subscriber's WebSocket (options, replay, heartbeats).
//! - [`filter`]: which events a subscriber asked for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use orrery_core::config::LiveConfig;
use orrery_core::event::Event;
use orrery_core::store::Store;
use orrery_core::store::live::LiveNotice;
use orrery_core::writer::WriteOutcome;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

pub mod bridge;
pub mod filter;
pub mod session;

pub use filter::{LiveFilter, PropertyEquals};
pub use session::{LiveOptions, upgrade};

/// The live stream's metrics.
#[derive(Clone, Debug, Default)]
pub struct LiveMetrics {
    /// Subscribers connected now.
    pub subscribers: Gauge,
    /// Event messages sent to subscribers (replayed ones included).
    pub delivered: Counter,
    /// Subscribers disconnected because their queue overflowed.
    pub dropped_slow: Counter,
    /// Committed events other instances may not have streamed: the
    /// notification could not be sent, or the listening connection was
    /// lost (counted per lost connection, not per event).
    pub notices_lost: Counter,
}

impl LiveMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orrery_live_subscribers",
            "Live stream subscribers connected now",
            self.subscribers.clone(),
        );
        registry.register(
            "orrery_live_events_delivered",
            "Event messages sent to live stream subscribers",
            self.delivered.clone(),
        );
        registry.register(
            "orrery_live_slow_consumers_dropped",
            "Live stream subscribers disconnected because their queue overflowed",
            self.dropped_slow.clone(),
        );
        registry.register(
            "orrery_live_notices_lost",
            "Commits other instances may not have streamed (failed NOTIFY, or a lost LISTEN connection)",
            self.notices_lost.clone(),
        );
    }
}

/// A committed event as subscribers share it: its JSON message is written
/// once, by the first subscriber that sends it.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event as stored.
    pub event: Event,
    message: OnceLock<String>,
}

impl LiveEvent {
    fn new(event: Event) -> Self {
        Self {
            event,
            message: OnceLock::new(),
        }
    }

    /// `{"type": "event", "event": {...}}`.
    pub fn message(&self) -> &str {
        self.message
            .get_or_init(|| session::event_message(self.event.clone()))
    }
}

/// What one subscriber has not been sent yet.
#[derive(Debug, Default)]
struct Queue {
    events: Vec<Arc<LiveEvent>>,
    slow: bool,
}

/// One subscriber: its filter and its bounded queue.
#[derive(Debug)]
pub struct Subscriber {
    filter: LiveFilter,
    queue: Mutex<Queue>,
    wake: Notify,
    capacity: usize,
}

impl Subscriber {
    /// Queues the events of `events` that match; `false` when they do not
    /// fit (the subscriber is then slow, its queue emptied, for good).
    fn push(&self, events: &[Arc<LiveEvent>]) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.slow {
            return true;
        }
        let before = q.events.len();
        q.events.extend(
            events
                .iter()
                .filter(|e| self.filter.matches(&e.event))
                .cloned(),
        );
        let overflow = q.events.len() > self.capacity;
        if overflow {
            q.slow = true;
            q.events = Vec::new();
        } else if q.events.len() == before {
            return true;
        }
        drop(q);
        self.wake.notify_one();
        !overflow
    }

    /// Resolves once the subscriber is found slow. (It may take a wake-up
    /// meant for [`Self::next`]; `next` looks at the queue before waiting,
    /// so nothing is missed.)
    pub async fn slowed(&self) {
        loop {
            if self.queue.lock().unwrap_or_else(|e| e.into_inner()).slow {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// Waits until there is something: the queued events, or [`SlowConsumer`]
    /// when the subscriber was found slow.
    pub async fn next(&self) -> Result<Vec<Arc<LiveEvent>>, SlowConsumer> {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.slow {
                    return Err(SlowConsumer);
                }
                if !q.events.is_empty() {
                    return Ok(std::mem::take(&mut q.events));
                }
            }
            self.wake.notified().await;
        }
    }
}

/// The subscriber let its queue overflow.
#[derive(Debug, Clone, Copy)]
pub struct SlowConsumer;

/// The in-process fan-out of committed events to subscribers.
#[derive(Debug)]
pub struct Hub {
    /// This instance, as named in its notifications.
    instance: Uuid,
    projects: RwLock<HashMap<Uuid, Vec<Arc<Subscriber>>>>,
    /// Subscribers registered (the fast path: nobody listens at all).
    registered: AtomicUsize,
    /// Slots taken, connected or about to be.
    slots: AtomicUsize,
    config: LiveConfig,
    /// The live stream's metrics.
    pub metrics: LiveMetrics,
    notifier: OnceLock<mpsc::Sender<LiveNotice>>,
    /// Turns true when the server stops: every stream closes (1001).
    closing: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// A hub with no subscriber, for an instance with a fresh id.
    pub fn new(config: LiveConfig) -> Self {
        Self {
            instance: Uuid::new_v4(),
            projects: RwLock::new(HashMap::new()),
            registered: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            config,
            metrics: LiveMetrics::default(),
            notifier: OnceLock::new(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Closes every stream (the server is stopping), so that a graceful
    /// shutdown does not wait for subscribers to leave.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when [`Self::close_all`] was called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// This instance's id in notifications.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Whether a subscriber on this instance follows `project`.
    pub fn listening(&self, project: Uuid) -> bool {
        if self.registered.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.projects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&project)
            .is_some_and(|s| !s.is_empty())
    }

    /// Takes one of the `live.max_subscribers` slots; `None` when all are
    /// taken.
    pub fn reserve(self: &Arc<Self>) -> Option<Slot> {
        let max = self.config.max_subscribers;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            hub: Arc::clone(self),
        })
    }

    /// Registers a subscriber of `project`; it receives what is published
    /// from now on, until the [`Registration`] is dropped.
    pub fn subscribe(&self, slot: Slot, project: Uuid, filter: LiveFilter) -> Registration {
        let subscriber = Arc::new(Subscriber {
            filter,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            capacity: self.config.queue_events.max(1),
        });
        self.projects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(project)
            .or_default()
            .push(Arc::clone(&subscriber));
        self.registered.fetch_add(1, Ordering::AcqRel);
        self.metrics.subscribers.inc();
        Registration {
            project,
            subscriber,
            slot,
        }
    }

    fn unsubscribe(&self, project: Uuid, subscriber: &Arc<Subscriber>) {
        let mut projects = self.projects.write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = projects.get_mut(&project) {
            let before = subs.len();
            subs.retain(|s| !Arc::ptr_eq(s, subscriber));
            if subs.len() < before {
                self.registered.fetch_sub(1, Ordering::AcqRel);
            }
            if subs.is_empty() {
                projects.remove(&project);
            }
        }
    }

    /// Hands committed events of `project` to its subscribers. Never
    /// blocks on a subscriber: a full queue drops the subscriber.
    pub fn publish(&self, project: Uuid, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let events: Vec<Arc<LiveEvent>> = events
            .into_iter()
            .map(|e| Arc::new(LiveEvent::new(e)))
            .collect();
        let mut slow = Vec::new();
        {
            let projects = self.projects.read().unwrap_or_else(|e| e.into_inner());
            let Some(subs) = projects.get(&project) else {
                return;
            };
            for s in subs {
                if !s.push(&events) {
                    slow.push(Arc::clone(s));
                }
            }
        }
        for s in slow {
            self.metrics.dropped_slow.inc();
            self.unsubscribe(project, &s);
        }
    }

    /// Called by ingestion right after the writer committed `ids` of
    /// `project` with `outcomes`: announces the inserted ones to the other
    /// instances (PostgreSQL, without waiting) and publishes them here.
    /// `copy` is the events as stored, taken when [`Self::listening`]
    /// before the write. When a subscriber came during the write (no
    /// copy), the rows are read back before this returns, so that they are
    /// published before the request's answer, hence before the events of
    /// the client's next request.
    pub async fn committed(
        &self,
        store: &Store,
        project: Uuid,
        outcomes: &[WriteOutcome],
        ids: &[Uuid],
        copy: Option<Vec<Event>>,
    ) {
        let inserted = |o: &WriteOutcome| *o == WriteOutcome::Inserted;
        let inserted_ids = || -> Vec<Uuid> {
            ids.iter()
                .zip(outcomes)
                .filter(|(_, o)| inserted(o))
                .map(|(id, _)| *id)
                .collect()
        };
        if let Some(tx) = self.notifier.get() {
            let notice = LiveNotice {
                instance: self.instance,
                project,
                ids: inserted_ids(),
            };
            if tx.try_send(notice).is_err() {
                self.metrics.notices_lost.inc();
                tracing::warn!(%project, "live: the notification queue is full; other instances miss a commit");
            }
        }
        match copy {
            Some(events) => {
                let events = events
                    .into_iter()
                    .zip(outcomes)
                    .filter(|(_, o)| inserted(o))
                    .map(|(e, _)| e)
                    .collect();
                self.publish(project, events);
            }
            None if self.listening(project) => {
                match store.events_by_ids(project, &inserted_ids()).await {
                    Ok(events) => self.publish(project, events),
                    Err(error) => {
                        tracing::warn!(%project, %error, "live: cannot read back committed events")
                    }
                }
            }
            None => {}
        }
    }

    fn set_notifier(&self, tx: mpsc::Sender<LiveNotice>) {
        let _ = self.notifier.set(tx);
    }
}

/// One of the `live.max_subscribers` places, held from before the
/// WebSocket upgrade until the connection ends.
#[derive(Debug)]
pub struct Slot {
    hub: Arc<Hub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A registered subscriber; dropping it unsubscribes.
#[derive(Debug)]
pub struct Registration {
    project: Uuid,
    subscriber: Arc<Subscriber>,
    slot: Slot,
}

impl Registration {
    /// The subscriber's queue.
    pub fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.slot.hub.unsubscribe(self.project, &self.subscriber);
        self.slot.hub.metrics.subscribers.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Event {
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "id": Uuid::new_v4(), "project_id": Uuid::nil(), "name": name,
            "distinct_id": null, "session_id": null, "timestamp": 0, "received_at": 0,
            "url": null, "referrer": null, "user_agent": null, "properties": {},
            "ip_hash": null, "visitor_id": null, "enrichment": {}
        }))
        .expect("an event");
        e.name = name.to_owned();
        e
    }

    fn hub(queue: usize, max: usize) -> Arc<Hub> {
        Arc::new(Hub::new(LiveConfig {
            queue_events: queue,
            max_subscribers: max,
            ..LiveConfig::default()
        }))
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_matches_in_order() {
        let hub = hub(10, 10);
        let project = Uuid::new_v4();
        let filter = LiveFilter::new(vec!["a".into()], vec![]);
        let reg = hub.subscribe(hub.reserve().expect("a slot"), project, filter);
        assert!(hub.listening(project));
        assert!(!hub.listening(Uuid::new_v4()));
        hub.publish(project, vec![event("a"), event("b"), event("a")]);
        hub.publish(Uuid::new_v4(), vec![event("a")]);
        let got = reg.subscriber().next().await.expect("not slow");
        assert_eq!(got.len(), 2);
        drop(reg);
        assert!(!hub.listening(project));
        assert_eq!(hub.metrics.subscribers.get(), 0);
    }

    #[tokio::test]
    async fn an_overflowing_subscriber_is_dropped_and_the_others_are_not() {
        let hub = hub(3, 10);
        let project = Uuid::new_v4();
        let slow = hub.subscribe(hub.reserve().expect("slot"), project, LiveFilter::default());
        let fast = hub.subscribe(hub.reserve().expect("slot"), project, LiveFilter::default());
        hub.publish(project, vec![event("a"), event("b")]);
        assert_eq!(fast.subscriber().next().await.expect("fast").len(), 2);
        hub.publish(project, vec![event("c"), event("d")]);
        assert!(slow.subscriber().next().await.is_err(), "slow");
        assert_eq!(fast.subscriber().next().await.expect("fast").len(), 2);
        assert_eq!(hub.metrics.dropped_slow.get(), 1);
        // Dropped from the hub at once: publishing no longer sees it.
        assert_eq!(hub.registered.load(Ordering::Acquire), 1);
    }

    #[test]
    fn slots_are_limited_and_given_back() {
        let hub = hub(3, 2);
        let a = hub.reserve().expect("first");
        let _b = hub.reserve().expect("second");
        assert!(hub.reserve().is_none());
        drop(a);
        assert!(hub.reserve().is_some());
    }
}
