//! Insights: plain-words findings about a project's traffic, from its
//! stored counts (seed 003's summary, trend and anomaly insights).
//!
//! [`generate`] computes, as of a moment `at`:
//! - **summary** of the last complete UTC day: events, visitors, sessions,
//!   page views, bounce rate, average session length, the top events, and
//!   the change from the day before;
//! - **trend** per event name, week over week: the 7 complete days up to
//!   `at`'s day against the 7 before; reported when the count moved by at
//!   least 20% (or appeared) and either week had at least 20 events;
//! - **anomaly** per event name for the last complete hour: its count
//!   against the 168 hours before it, by a robust z-score
//!   `0.6745 (x - median) / MAD`; reported beyond the threshold (3.5 by
//!   default) when the hour differs from the median by at least 5 events.
//!   When the baseline's MAD is 0 (a flat baseline), the mean absolute
//!   deviation stands in for it (`(x - median) / (1.2533 * meanAD)`).
//!
//! Each insight has a key (e.g. `trend:signup:2026-11-22`), so generating
//! again for the same period replaces it instead of adding a copy.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::store::{NewInsight, PeriodTotals, Store, StoreError};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Hours of baseline for anomalies.
pub const BASELINE_HOURS: i64 = 168;
/// Least relative change reported as a trend.
pub const TREND_MIN_CHANGE: f64 = 0.2;
/// Least count (in either week) for a trend.
pub const TREND_MIN_EVENTS: i64 = 20;
/// Least absolute difference from the median for an anomaly.
pub const ANOMALY_MIN_DIFF: f64 = 5.0;
/// Most trend insights per run (largest changes first).
pub const MAX_TRENDS: usize = 10;

/// Computes the insights of `project` as of `at` (ms), and stores them.
///
/// # Errors
/// The database error.
pub async fn generate(
    store: &Store,
    project: Uuid,
    at: i64,
    anomaly_threshold: f64,
) -> Result<Vec<NewInsight>, StoreError> {
    let day_end = at.div_euclid(DAY_MS) * DAY_MS; // start of at's UTC day
    let day_start = day_end - DAY_MS;
    let mut out = Vec::new();

    let today = store.period_totals(project, day_start, day_end).await?;
    let before = store
        .period_totals(project, day_start - DAY_MS, day_start)
        .await?;
    let week_start = day_end - 7 * DAY_MS;
    let hour_end = at.div_euclid(HOUR_MS) * HOUR_MS;
    let hour_start = hour_end - HOUR_MS;
    // One read serves all three: the two weeks before `at`'s day (summary,
    // trends) and the anomaly baseline up to the last complete hour, which
    // lies within them or in `at`'s day. Each user picks its own range.
    let counts = store
        .hourly_counts(project, week_start - 7 * DAY_MS, hour_end)
        .await?;
    if today.events > 0 || before.events > 0 {
        let mut top: HashMap<&str, i64> = HashMap::new();
        for (name, hour, n) in &counts {
            if (day_start..day_end).contains(&(hour * HOUR_MS)) {
                *top.entry(name.as_str()).or_default() += n;
            }
        }
        out.push(summary(day_start, &today, &before, top));
    }
    out.extend(trends(&counts, week_start, day_end));
    out.extend(anomalies(&counts, hour_start, anomaly_threshold));

    store.upsert_insights(project, &out).await?;
    Ok(out)
}

fn date(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

fn percent_change(now: i64, before: i64) -> Option<f64> {
    (before > 0).then(|| (now - before) as f64 / before as f64)
}

fn describe_change(now: i64, before: i64) -> String {
    match percent_change(now, before) {
        None => "with none the day before".to_owned(),
        Some(c) if c.abs() < 0.005 => format!("the same as the day before ({before})"),
        Some(c) if c > 0.0 => format!("{:.0}% more than the day before ({before})", c * 100.0),
        Some(c) => format!("{:.0}% fewer than the day before ({before})", -c * 100.0),
    }
}

fn duration_words(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn summary(
    day_start: i64,
    t: &PeriodTotals,
    before: &PeriodTotals,
    top: HashMap<&str, i64>,
) -> NewInsight {
    let day = date(day_start);
    let mut top: Vec<(&str, i64)> = top.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(3);
    let top_words: Vec<String> = top.iter().map(|(n, c)| format!("{n} ({c})")).collect();
    let mut content = format!(
        "On {day} (UTC) the project received {} events from {} visitors in {} sessions, \
         including {} page views; {}.",
        t.events,
        t.visitors,
        t.sessions,
        t.pageviews,
        describe_change(t.events, before.events)
    );
    if t.sessions > 0 {
        content.push_str(&format!(
            " {:.0}% of sessions bounced; the average session lasted {}.",
            t.bounced as f64 * 100.0 / t.sessions as f64,
            duration_words(t.session_ms / t.sessions)
        ));
    }
    if !top_words.is_empty() {
        content.push_str(&format!(" Top events: {}.", top_words.join(", ")));
    }
    NewInsight {
        key: format!("summary:{day}"),
        kind: "summary",
        title: format!("{day}: {} events from {} visitors", t.events, t.visitors),
        content,
        metadata: json!({
            "date": day.to_string(),
            "events": t.events,
            "visitors": t.visitors,
            "sessions": t.sessions,
            "pageviews": t.pageviews,
            "bounced_sessions": t.bounced,
            "average_session_ms": if t.sessions > 0 { t.session_ms / t.sessions } else { 0 },
            "events_day_before": before.events,
            "top_events": top.iter().map(|(n, c)| json!({"event": n, "count": c})).collect::<Vec<_>>(),
        }),
        period_start: day_start,
        period_end: day_start + DAY_MS,
    }
}

fn trends(counts: &[(String, i64, i64)], week_start: i64, week_end: i64) -> Vec<NewInsight> {
    let mut weeks: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (name, hour, n) in counts {
        let t = hour * HOUR_MS;
        let w = weeks.entry(name.as_str()).or_default();
        if (week_start..week_end).contains(&t) {
            w.0 += n;
        } else if (week_start - 7 * DAY_MS..week_start).contains(&t) {
            w.1 += n;
        }
    }
    let last_day = date(week_end - 1);
    let mut found: Vec<(f64, NewInsight)> = Vec::new();
    for (name, (now, before)) in weeks {
        if now.max(before) < TREND_MIN_EVENTS {
            continue;
        }
        let change = percent_change(now, before);
        if let Some(c) = change
            && c.abs() < TREND_MIN_CHANGE
        {
            continue;
        }
        let (direction, words) = match change {
            None => (
                "new",
                format!("{now} events in the 7 days to {last_day}, none in the 7 days before."),
            ),
            Some(c) if c > 0.0 => (
                "up",
                format!(
                    "{now} events in the 7 days to {last_day}, up {:.0}% from {before} in the 7 days before.",
                    c * 100.0
                ),
            ),
            Some(c) => (
                "down",
                format!(
                    "{now} events in the 7 days to {last_day}, down {:.0}% from {before} in the 7 days before.",
                    -c * 100.0
                ),
            ),
        };
        let magnitude = change.map_or(f64::INFINITY, f64::abs);
        found.push((
            magnitude,
            NewInsight {
                key: format!("trend:{name}:{last_day}"),
                kind: "trend",
                title: match change {
                    None => format!("`{name}` is new this week ({now} events)"),
                    Some(c) => format!(
                        "`{name}` {direction} {:.0}% week over week",
                        c.abs() * 100.0
                    ),
                },
                content: format!("{name}: {words}"),
                metadata: json!({
                    "event": name,
                    "this_week": now,
                    "previous_week": before,
                    "change": change,
                    "direction": direction,
                    "week_end": last_day.to_string(),
                }),
                period_start: week_start,
                period_end: week_end,
            },
        ));
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().take(MAX_TRENDS).map(|(_, i)| i).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The robust z-score of `x` against `baseline`; `None` when the baseline
/// does not vary at all and `x` equals its median.
pub fn robust_z(x: f64, baseline: &[f64]) -> Option<f64> {
    let mut b = baseline.to_vec();
    let m = median(&mut b);
    let mut dev: Vec<f64> = b.iter().map(|v| (v - m).abs()).collect();
    let mad = median(&mut dev);
    if mad > 0.0 {
        return Some(0.6745 * (x - m) / mad);
    }
    let mean_ad = dev.iter().sum::<f64>() / dev.len().max(1) as f64;
    if mean_ad > 0.0 {
        Some((x - m) / (1.2533 * mean_ad))
    } else if x == m {
        None
    } else {
        Some(if x > m {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        })
    }
}

fn anomalies(hourly: &[(String, i64, i64)], hour_start: i64, threshold: f64) -> Vec<NewInsight> {
    let target = hour_start / HOUR_MS;
    let first = target - BASELINE_HOURS;
    let mut per_name: BTreeMap<&str, HashMap<i64, i64>> = BTreeMap::new();
    for (name, hour, n) in hourly {
        per_name.entry(name.as_str()).or_default().insert(*hour, *n);
    }
    let start = DateTime::<Utc>::from_timestamp_millis(hour_start).unwrap_or_default();
    let mut out = Vec::new();
    for (&name, hours) in &per_name {
        let x = *hours.get(&target).unwrap_or(&0) as f64;
        let baseline: Vec<f64> = (first..target)
            .map(|h| *hours.get(&h).unwrap_or(&0) as f64)
            .collect();
        let mut sorted = baseline.clone();
        let m = median(&mut sorted);
        if (x - m).abs() < ANOMALY_MIN_DIFF {
            continue;
        }
        let Some(z) = robust_z(x, &baseline) else {
            continue;
        };
        if z.abs() < threshold {
            continue;
        }
        let spike = z > 0.0;
        let when = format!(
            "between {:02}:00 and {:02}:00 UTC on {}",
            start.hour(),
            (start + Duration::hours(1)).hour(),
            start.date_naive()
        );
        let z_words = if z.is_finite() {
            format!("robust z-score {z:.1}")
        } else {
            "the baseline never varied".to_owned()
        };
        out.push(NewInsight {
            key: format!("anomaly:{name}:{}", start.format("%Y-%m-%dT%H")),
            kind: "anomaly",
            title: format!(
                "Unusual {} of `{name}` {when}",
                if spike { "spike" } else { "drop" }
            ),
            content: format!(
                "{name}: {x:.0} events {when}, against a median of {m:.0} per hour over the \
                 previous {BASELINE_HOURS} hours ({z_words}, threshold {threshold}): an unusual {}.",
                if spike { "spike" } else { "drop" }
            ),
            metadata: json!({
                "event": name,
                "count": x,
                "baseline_median": m,
                "z_score": if z.is_finite() { json!(z) } else { json!(null) },
                "threshold": threshold,
                "direction": if spike { "spike" } else { "drop" },
                "hour": start.to_rfc3339(),
            }),
            period_start: hour_start,
            period_end: hour_start + HOUR_MS,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_z_flags_spikes_and_tolerates_flat_baselines() {
        let base: Vec<f64> = (0..168).map(|i| 10.0 + f64::from(i % 5)).collect();
        assert!(robust_z(60.0, &base).unwrap() > 3.5);
        assert!(robust_z(12.0, &base).unwrap().abs() < 3.5);
        let flat = vec![0.0; 168];
        assert_eq!(robust_z(0.0, &flat), None);
        assert_eq!(robust_z(9.0, &flat), Some(f64::INFINITY));
    }

    #[test]
    fn trends_need_enough_events_and_change() {
        let week_end = 1_795_392_000_000; // 2026-11-23T00:00Z
        let week_start = week_end - 7 * DAY_MS;
        let h = |t: i64| t / HOUR_MS;
        let counts = vec![
            ("pageview".to_owned(), h(week_start + HOUR_MS), 150),
            ("pageview".to_owned(), h(week_start - DAY_MS), 100),
            ("signup".to_owned(), h(week_start + HOUR_MS), 5),
            ("flat".to_owned(), h(week_start + HOUR_MS), 100),
            ("flat".to_owned(), h(week_start - DAY_MS), 95),
            ("launch".to_owned(), h(week_start + HOUR_MS), 30),
        ];
        let t = trends(&counts, week_start, week_end);
        let keys: Vec<&str> = t.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["trend:launch:2026-11-22", "trend:pageview:2026-11-22"]
        );
        assert!(t[1].content.contains("up 50% from 100"), "{}", t[1].content);
    }

    #[test]
    fn anomalies_name_the_hour_and_numbers() {
        let hour_start = 1_795_392_000_000 + 14 * HOUR_MS;
        let target = hour_start / HOUR_MS;
        let mut hourly: Vec<(String, i64, i64)> = (1..=BASELINE_HOURS)
            .map(|i| ("pageview".to_owned(), target - i, 10 + i % 3))
            .collect();
        hourly.push(("pageview".to_owned(), target, 90));
        let a = anomalies(&hourly, hour_start, 3.5);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key, "anomaly:pageview:2026-11-23T14");
        assert!(
            a[0].content
                .contains("90 events between 14:00 and 15:00 UTC"),
            "{}",
            a[0].content
        );
        assert!(a[0].content.contains("median of 11"), "{}", a[0].content);
    }
}
