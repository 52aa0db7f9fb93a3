//! Funnels: how many people did a sequence of events in order within a
//! conversion window (see `orrery_core::analytics::funnel`).

use std::borrow::Cow;

use orrery_core::analytics::Filter;
use orrery_core::analytics::funnel::{
    self, Funnel as CoreFunnel, FunnelPart, MAX_STEPS, Step, StepCount,
};
use orrery_core::event::now_ms;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{RangeParam, Time, rfc3339_ms, scalar_type, text_param};
use crate::api::stats::{
    DEFAULT_BREAKDOWN_LIMIT, DimensionParam, FilterParam, TopLimit, bad, cached, filter_pattern,
    parse_filter, property_read, query_of, round,
};
use crate::auth::SecretKey;
use crate::error::ApiResult;
use crate::state::app_state;

/// Longest event name of a step, in characters.
const MAX_EVENT_CHARS: usize = 200;
/// Conversion window when none is given: 14 days.
const DEFAULT_WINDOW_SECS: i64 = 14 * 24 * 3600;
/// Longest conversion window: 365 days.
const MAX_WINDOW_SECS: i64 = 365 * 24 * 3600;

text_param!(
    /// A step's event name.
    StepParam(String),
    "string(step)",
    {
        let mut s = MetaSchema::new("string");
        s.pattern = Some(r"^[^\u0000-\u001F\u007F-\u009F]{1,200}$".to_owned());
        s
    },
    |v| {
        let n = v.chars().count();
        if n == 0 || n > MAX_EVENT_CHARS || v.chars().any(char::is_control) {
            return Err(format!(
                "an event name of 1 to {MAX_EVENT_CHARS} characters without control characters"
            ));
        }
        Ok(v.to_owned())
    }
);

text_param!(
    /// A condition on one step: `STEP:DIMENSION:OP:VALUE`, STEP from 1.
    StepFilterParam((usize, Filter)),
    "string(step_filter)",
    {
        let mut s = MetaSchema::new("string");
        s.pattern = Some(format!("^[1-9][0-9]?:{}$", filter_pattern()));
        s
    },
    |v| {
        let (step, filter) = v.split_once(':').unwrap_or(("", ""));
        let step = step
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_STEPS).contains(n))
            .ok_or_else(|| {
                format!("`{v}` is not STEP:DIMENSION:OP:VALUE with STEP from 1 to {MAX_STEPS}")
            })?;
        Ok((step, parse_filter(filter)?))
    }
);

text_param!(
    /// A conversion window in seconds.
    WindowParam(i64),
    "integer(window)",
    {
        let mut s = MetaSchema::new_with_format("integer", "int64");
        s.minimum = Some(1.0);
        #[allow(clippy::cast_precision_loss)]
        {
            s.maximum = Some(MAX_WINDOW_SECS as f64);
        }
        s.default = Some(Value::from(DEFAULT_WINDOW_SECS));
        s
    },
    |v| {
        v.parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_WINDOW_SECS).contains(n))
            .ok_or_else(|| format!("must be seconds from 1 to {MAX_WINDOW_SECS} (365 days)"))
    }
);

/// One step of a funnel's answer.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FunnelStep {
    /// Its number, from 1.
    pub step: u32,
    /// Its event name.
    pub event: String,
    /// People who reached it.
    pub people: u64,
    /// Their share (0 to 1) of the people of step 1.
    pub conversion_rate: f64,
    /// Their share of the people of the step before (1 for step 1).
    pub step_conversion_rate: f64,
    /// People of the step before who did not reach it (0 for step 1).
    pub dropped: u64,
    /// Mean time from the step before, ms (absent for step 1 and when
    /// nobody reached it).
    pub avg_time_to_convert_ms: Option<f64>,
    /// Median time from the step before, ms.
    pub median_time_to_convert_ms: Option<i64>,
}

/// One value of a funnel's breakdown.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FunnelGroup {
    /// The value on the first step's event; absent for events without one.
    pub value: Option<String>,
    /// Its steps.
    pub steps: Vec<FunnelStep>,
}

/// A funnel's answer.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Funnel {
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// The conversion window, seconds.
    pub window_secs: i64,
    /// Every step, for everyone.
    pub steps: Vec<FunnelStep>,
    /// The breakdown dimension, when one was asked for.
    pub by: Option<String>,
    /// With `by`: the values with the most people at step 1 (then by
    /// value), `limit` of them.
    pub groups: Option<Vec<FunnelGroup>>,
    /// With `by`: values in all.
    pub total_values: Option<u64>,
}

/// The steps of an answer, with rates and times.
fn steps_of(events: &[String], counts: &[StepCount]) -> Vec<FunnelStep> {
    let first = counts.first().map_or(0, |c| c.people);
    #[allow(clippy::cast_precision_loss)]
    let share = |x: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            round(x as f64 / of as f64)
        }
    };
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let before = if i == 0 {
                c.people
            } else {
                counts[i - 1].people
            };
            FunnelStep {
                step: u32::try_from(i + 1).unwrap_or(u32::MAX),
                event: events[i].clone(),
                people: c.people,
                conversion_rate: share(c.people, first),
                step_conversion_rate: if i == 0 { 1.0 } else { share(c.people, before) },
                dropped: before - c.people,
                avg_time_to_convert_ms: c.mean_ms().map(round),
                median_time_to_convert_ms: c.median_ms(),
            }
        })
        .collect()
}

/// Funnels.
pub struct FunnelsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Stats")]
impl FunnelsApi {
    /// Funnel
    ///
    /// How many people did the `step` events (2 to 20, in order; a name
    /// may repeat) one after the other, each within `window_secs` (default
    /// 14 days) of their first step, all in the range, with conversion,
    /// drop-off and time to convert per step. A person is a visitor as
    /// the statistics count them (`distinct_id`, else `visitor_id`, else
    /// IP hash), counted once, at the furthest step of their best attempt
    /// (a later first step replaces an earlier one as soon as it gets as
    /// far). `filter` applies to every step, `step_filter`
    /// (`STEP:DIMENSION:OP:VALUE`, STEP from 1) to one; `entry_page` and
    /// `exit_page` are session dimensions and cannot be used. `by` breaks
    /// the people down by that dimension's value on their first step.
    #[oai(
        path = "/projects/:project_id/stats/funnel",
        method = "get",
        operation_id = "stats_funnel"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn funnel(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// The steps' event names, in order (2 to 20).
        #[oai(validator(min_items = 2, max_items = 20))]
        step: Query<Vec<StepParam>>,
        /// `STEP:DIMENSION:OP:VALUE`, a condition on one step (STEP from 1),
        /// repeatable (at most 50).
        #[oai(validator(max_items = 50))]
        step_filter: Query<Option<Vec<StepFilterParam>>>,
        /// Seconds from the first step to the last, 1 to 31,536,000
        /// (default 1,209,600: 14 days).
        window_secs: Query<Option<WindowParam>>,
        /// `24h`, `7d`, `30d`, `90d`, `12mo` or `all` (not with `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// `DIMENSION:OP:VALUE` on every step, repeatable (at most 20).
        #[oai(validator(max_items = 20))]
        filter: Query<Option<Vec<FilterParam>>>,
        /// Break the people down by this dimension on their first step.
        by: Query<Option<DimensionParam>>,
        /// With `by`: values to list, 1 to 1000 (default 10).
        limit: Query<Option<TopLimit>>,
    ) -> ApiResult<poem_openapi::payload::Json<Funnel>> {
        let reads = property_read(
            filter
                .0
                .iter()
                .flatten()
                .map(|f| &f.0.dimension)
                .chain(step_filter.0.iter().flatten().map(|s| &s.0.1.dimension))
                .chain(by.0.iter().map(|b| &b.0)),
        );
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let events: Vec<String> = step.0.into_iter().map(|s| s.0).collect();
            let mut steps: Vec<Step> = events
                .iter()
                .map(|e| Step {
                    event: e.clone(),
                    filters: Vec::new(),
                })
                .collect();
            for StepFilterParam((n, f)) in step_filter.0.unwrap_or_default() {
                let Some(s) = steps.get_mut(n - 1) else {
                    return Err(bad(
                        "step_filter",
                        format!("step {n} does not exist: there are {} steps", events.len()),
                    ));
                };
                s.filters.push(f);
            }
            let window_secs = window_secs.0.map_or(DEFAULT_WINDOW_SECS, |w| w.0);
            let q = query_of(state, project_id.0, range.0, from.0, to.0, filter.0).await?;
            let f = CoreFunnel {
                query: q,
                steps,
                window_ms: window_secs * 1000,
                breakdown: by.0.map(|b| b.0),
            };
            f.check().map_err(|(part, m)| {
                let parameter = match part {
                    FunnelPart::Steps => "step",
                    FunnelPart::Filters => "filter",
                    FunnelPart::StepFilters => "step_filter",
                    FunnelPart::Breakdown => "by",
                };
                bad(parameter, m)
            })?;
            let answer = funnel::run(&state.store, &f, now_ms()).await?;
            let limit = limit.0.map_or(DEFAULT_BREAKDOWN_LIMIT, |l| l.0);
            let (groups, total_values) = match &f.breakdown {
                None => (None, None),
                Some(_) => (
                    Some(
                        answer
                            .groups
                            .iter()
                            .take(usize::try_from(limit).unwrap_or(usize::MAX))
                            .map(|(value, counts)| FunnelGroup {
                                value: value.clone(),
                                steps: steps_of(&events, counts),
                            })
                            .collect(),
                    ),
                    Some(answer.groups.len() as u64),
                ),
            };
            Ok(Funnel {
                from: rfc3339_ms(f.query.from),
                to: rfc3339_ms(f.query.to),
                window_secs,
                steps: steps_of(&events, &answer.steps),
                by: f
                    .breakdown
                    .as_ref()
                    .map(orrery_core::analytics::Dimension::name),
                groups,
                total_values,
            })
        })
        .await
    }
}
