//! Periodic jobs. Each runs on one instance at a time: before a run, the
//! instance takes the job's lease in the database (`job_leases`), which
//! also works when several instances share one PostgreSQL database. A
//! lease lasts two intervals, so when its holder stops another instance
//! takes the job over.

use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use crate::state::AppState;

/// Delay before the first run after start.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(10);

/// Starts the insights job when enabled; it stops with the runtime.
pub fn spawn_insights(state: AppState) {
    let cfg = state.config.insights.clone();
    if !cfg.enabled || cfg.interval_minutes == 0 {
        return;
    }
    let interval = Duration::from_secs(cfg.interval_minutes * 60);
    let holder = format!("instance-{}", Uuid::now_v7());
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_RUN_AFTER).await;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let now = orrery_core::event::now_ms();
            let lease_ms = i64::try_from(interval.as_millis() * 2).unwrap_or(i64::MAX);
            match state
                .store
                .acquire_lease("insights", &holder, now.saturating_add(lease_ms))
                .await
            {
                Ok(true) => run_insights(&state, now, cfg.anomaly_threshold).await,
                Ok(false) => {
                    tracing::debug!("insights job held by another instance");
                }
                Err(error) => warn!(%error, "cannot take the insights lease"),
            }
        }
    });
}

#[tracing::instrument(skip(state))]
async fn run_insights(state: &AppState, now: i64, threshold: f64) {
    let projects = match state.store.list_projects(None).await {
        Ok(p) => p,
        Err(error) => {
            warn!(%error, "insights job: cannot list projects");
            return;
        }
    };
    let mut total = 0;
    for p in projects {
        match orrery_core::insights::generate(&state.store, p.id, now, threshold).await {
            Ok(found) => total += found.len(),
            Err(error) => warn!(project = %p.id, %error, "insights job failed for a project"),
        }
    }
    info!(insights = total, "insights generated");
}
