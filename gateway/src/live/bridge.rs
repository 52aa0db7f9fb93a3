//! Live events across instances sharing one PostgreSQL: LISTEN/NOTIFY.
//!
//! After each commit, ingestion hands a [`LiveNotice`] (this instance, the
//! project, the inserted ids) to the notifier task, without waiting: the
//! task sends the notices queued meanwhile with one `pg_notify` statement.
//! The listener task holds one `LISTEN orrery_live` connection; for a
//! notice of another instance about a project someone here follows, it
//! reads the rows back by id and publishes them to the local hub. An
//! instance skips its own notices: it published those already.
//!
//! Why LISTEN/NOTIFY rather than a table the instances poll: delivery is
//! pushed (no polling interval in the latency, no load when idle), it needs
//! nothing but the database already there, and a notice names exactly the
//! rows of one commit, so the out-of-order commit of sequence numbers
//! across instances does not matter. Its limits: a notice sent while a
//! listener is reconnecting is lost for that instance (counted in
//! `orrery_live_notices_lost`; the events are stored, a subscriber can
//! reconnect with `replay`), and payloads are capped at 8,000 bytes, hence
//! references rather than events.

use std::sync::Arc;
use std::time::Duration;

use orrery_core::store::Store;
use orrery_core::store::live::LiveNotice;
use sea_orm::DatabaseBackend;
use tokio::sync::mpsc;

use super::Hub;

/// Commits waiting for the notifier task; beyond, a notice is dropped
/// (and counted) rather than slowing ingestion.
const NOTICE_QUEUE: usize = 10_000;
/// Notices sent by one statement at most.
const NOTICES_PER_STATEMENT: usize = 256;

/// Starts the notifier and listener tasks on PostgreSQL; nothing on
/// SQLite, where one instance owns the database.
pub fn start(store: &Store, hub: &Arc<Hub>) {
    if store.backend() != DatabaseBackend::Postgres {
        return;
    }
    let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
    hub.set_notifier(tx);
    tokio::spawn(notifier(store.clone(), Arc::clone(hub), rx));
    tokio::spawn(listener(store.clone(), Arc::clone(hub)));
}

async fn notifier(store: Store, hub: Arc<Hub>, mut rx: mpsc::Receiver<LiveNotice>) {
    let mut notices = Vec::with_capacity(NOTICES_PER_STATEMENT);
    while rx.recv_many(&mut notices, NOTICES_PER_STATEMENT).await > 0 {
        let payloads: Vec<String> = notices.iter().flat_map(LiveNotice::payloads).collect();
        if let Err(error) = store.notify_live(&payloads).await {
            hub.metrics.notices_lost.inc_by(notices.len() as u64);
            tracing::warn!(%error, commits = notices.len(), "live: NOTIFY failed; other instances do not stream these commits");
        }
        notices.clear();
    }
}

async fn listener(store: Store, hub: Arc<Hub>) {
    loop {
        let mut listener = match store.live_listener().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "live: cannot LISTEN; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match listener.recv().await {
                Ok(Some(payload)) => {
                    receive(&store, &hub, &payload).await;
                    while let Some(payload) = listener.next_buffered() {
                        receive(&store, &hub, &payload).await;
                    }
                }
                Ok(None) => {
                    // The next `recv` reconnects and listens again.
                    hub.metrics.notices_lost.inc();
                    tracing::warn!(
                        "live: the LISTEN connection was lost; commits of other instances meanwhile are not streamed"
                    );
                }
                Err(error) => {
                    hub.metrics.notices_lost.inc();
                    tracing::warn!(%error, "live: LISTEN failed; reconnecting in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Publishes here the events of another instance's notice, when someone
/// here follows their project.
async fn receive(store: &Store, hub: &Hub, payload: &str) {
    let Some(notice) = LiveNotice::parse(payload) else {
        tracing::debug!("live: a notification that is not ours");
        return;
    };
    if notice.instance == hub.instance() || !hub.listening(notice.project) {
        return;
    }
    match store.events_by_ids(notice.project, &notice.ids).await {
        Ok(events) => hub.publish(notice.project, events),
        Err(error) => {
            hub.metrics.notices_lost.inc();
            tracing::warn!(project = %notice.project, %error, "live: cannot read another instance's events");
        }
    }
}
