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

/// Starts the accounts' clean-up: every 10 minutes, each instance deletes
/// expired refresh tokens, logins past their end, expired WebSocket
/// tickets and stale failed-login counts (idempotent, so no lease).
pub fn spawn_auth_cleanup(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let window = i64::try_from(state.config.auth.lockout_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX / 4);
        loop {
            tick.tick().await;
            match state
                .store
                .purge_auth(orrery_core::event::now_ms(), window)
                .await
            {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "expired logins and tickets deleted"),
                Ok(_) => {}
                Err(error) => warn!(%error, "accounts clean-up failed; will retry"),
            }
        }
    });
}

/// Starts the rollup job when `analytics.rollup_interval_secs` is not 0:
/// every interval, under the `rollups` lease, it redoes the marked hours
/// that are over, `rollup_hours_per_round` at a time, until none is left.
pub fn spawn_rollups(state: AppState) {
    let cfg = state.config.analytics.clone();
    if cfg.rollup_interval_secs == 0 {
        return;
    }
    let interval = Duration::from_secs(cfg.rollup_interval_secs);
    let per_round = cfg.rollup_hours_per_round.max(1);
    let gap_ms = i64::try_from(cfg.rollup_redo_gap_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let holder = format!("instance-{}", Uuid::now_v7());
    tokio::spawn(async move {
        let mut recent = orrery_core::analytics::rollup::RecentRedos::new(gap_ms);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lease_ms = i64::try_from(interval.as_millis() * 2)
                .unwrap_or(i64::MAX)
                .max(60_000);
            loop {
                let now = orrery_core::event::now_ms();
                match state
                    .store
                    .acquire_lease("rollups", &holder, now.saturating_add(lease_ms))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!("rollup job held by another instance");
                        break;
                    }
                    Err(error) => {
                        warn!(%error, "cannot take the rollups lease");
                        break;
                    }
                }
                let redone = orrery_core::analytics::rollup::redo_due(
                    &state.store,
                    now,
                    per_round,
                    &mut recent,
                )
                .await;
                match redone {
                    Ok((n, later, days)) => {
                        if n > 0 || days > 0 {
                            tracing::debug!(hours = n, later, days, "rollups redone");
                        }
                        // Go on at once only while whole rounds are done.
                        if (n as u64) < per_round && (days as u64) < per_round {
                            break;
                        }
                    }
                    Err(error) => {
                        warn!(%error, "rollup job failed; will retry");
                        break;
                    }
                }
            }
        }
    });
}
