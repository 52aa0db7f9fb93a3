//! Retention: cohorts by first-seen period and how many of them came back
//! in each later period (see `orrery_core::analytics::retention`).

use std::borrow::Cow;

use chrono_tz::Tz;
use orrery_core::analytics::query::Interval;
use orrery_core::analytics::retention::{self, Retention as CoreRetention};
use orrery_core::event::now_ms;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::funnels::StepParam;
use crate::api::params::{RangeParam, Time, enum_schema, rfc3339_ms, scalar_type, text_param};
use crate::api::stats::{FilterParam, TzParam, bad, cached, property_read, query_of, round};
use crate::auth::SecretKey;
use crate::error::ApiResult;
use crate::state::app_state;

/// Most cohorts in one table.
const MAX_COHORTS: usize = 1000;
/// Most periods per cohort.
const MAX_PERIODS: usize = 100;

text_param!(
    /// A cohort period.
    PeriodParam(Interval),
    "string(period)",
    enum_schema(["day", "week", "month"]),
    |v| match Interval::parse(v) {
        Ok(Interval::Hour) | Err(_) => Err(format!("unknown period `{v}`: one of day, week, month")),
        Ok(i) => Ok(i),
    }
);

text_param!(
    /// Periods per cohort.
    PeriodsParam(usize),
    "integer(periods)",
    {
        let mut s = MetaSchema::new_with_format("integer", "int32");
        s.minimum = Some(1.0);
        #[allow(clippy::cast_precision_loss)]
        {
            s.maximum = Some(MAX_PERIODS as f64);
        }
        s
    },
    |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PERIODS).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {MAX_PERIODS}"))
    }
);

/// One cohort.
#[derive(Debug, Clone, Object)]
pub struct CohortOut {
    /// Start of its period, RFC 3339 (UTC).
    pub start: String,
    /// People first seen in it.
    pub people: u64,
    /// Of them, how many were active in its period 0, 1, 2... (periods
    /// that start before the end of the range).
    pub active: Vec<u64>,
    /// The same as shares (0 to 1) of `people`.
    pub rates: Vec<f64>,
}

/// A retention table.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Retention {
    /// `day`, `week` or `month`.
    pub period: String,
    /// The IANA time zone of the period boundaries.
    pub tz: String,
    /// Start of the range: the start of the first cohort's period.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// The event that puts a person in a cohort (any, when absent).
    pub cohort_event: Option<String>,
    /// The event that counts as coming back (any, when absent).
    pub return_event: Option<String>,
    /// One per period of the range, oldest first.
    pub cohorts: Vec<CohortOut>,
}

/// Retention.
pub struct RetentionApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Stats")]
impl RetentionApi {
    /// Retention
    ///
    /// People grouped by the `period` (`day`, `week` from Monday, `month`;
    /// default `week`, boundaries in the IANA zone `tz`) of their first
    /// event ever (their first `cohort_event`, when given), for the
    /// periods of the range (default `90d`; the range starts at the start
    /// of its first period), and how many of each cohort were active (had
    /// an event, or a `return_event` when given) in its period 0, 1, 2...,
    /// up to `periods` of them and only periods that start in the range.
    /// A person is a visitor as the statistics count them. `filter`
    /// applies to every event read (first-seen and activity alike).
    #[oai(
        path = "/projects/:project_id/stats/retention",
        method = "get",
        operation_id = "stats_retention"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn retention(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// `day`, `week` (default) or `month`.
        period: Query<Option<PeriodParam>>,
        /// IANA time zone, e.g. `Europe/Berlin` (default `UTC`).
        tz: Query<Option<TzParam>>,
        /// The event that puts a person in a cohort (default: any).
        cohort_event: Query<Option<StepParam>>,
        /// The event that counts as coming back (default: any).
        return_event: Query<Option<StepParam>>,
        /// Periods per cohort, 1 to 100 (default: all in the range, at
        /// most 100).
        periods: Query<Option<PeriodsParam>>,
        /// `24h`, `7d`, `30d`, `90d` (default), `12mo` or `all` (not with
        /// `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// `DIMENSION:OP:VALUE`, repeatable (at most 20).
        #[oai(validator(max_items = 20))]
        filter: Query<Option<Vec<FilterParam>>>,
    ) -> ApiResult<Json<Retention>> {
        let reads = property_read(filter.0.iter().flatten().map(|f| &f.0.dimension));
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let every = period.0.map_or(Interval::Week, |p| p.0);
            let zone = tz.0.map_or(Tz::UTC, |t| t.0);
            let range = match (&range.0, &from.0, &to.0) {
                (None, None, None) => Some(RangeParam("90d".to_owned())),
                _ => range.0,
            };
            let mut q = query_of(state, project_id.0, range, from.0, to.0, filter.0).await?;
            let starts = every
                .buckets(zone, q.from, q.to)
                .map_err(|m| bad("period", m))?;
            if starts.len() > MAX_COHORTS {
                return Err(bad(
                    "period",
                    format!(
                        "the range holds {} periods, more than {MAX_COHORTS} cohorts: \
                         choose a longer period or a shorter range",
                        starts.len()
                    ),
                ));
            }
            q.from = starts.first().copied().unwrap_or(q.from);
            let r = CoreRetention {
                query: q,
                period: every,
                tz: zone,
                cohort_event: cohort_event.0.map(|e| e.0),
                return_event: return_event.0.map(|e| e.0),
                periods: periods.0.map_or(MAX_PERIODS, |p| p.0),
            };
            let cohorts = retention::run(&state.store, &r, &starts, now_ms()).await?;
            #[allow(clippy::cast_precision_loss)]
            let share = |x: u64, of: u64| {
                if of == 0 {
                    0.0
                } else {
                    round(x as f64 / of as f64)
                }
            };
            Ok(Retention {
                period: every.name().to_owned(),
                tz: zone.name().to_owned(),
                from: rfc3339_ms(r.query.from),
                to: rfc3339_ms(r.query.to),
                cohort_event: r.cohort_event.clone(),
                return_event: r.return_event.clone(),
                cohorts: cohorts
                    .into_iter()
                    .map(|c| CohortOut {
                        start: rfc3339_ms(c.start),
                        people: c.people,
                        rates: c.active.iter().map(|a| share(*a, c.people)).collect(),
                        active: c.active,
                    })
                    .collect(),
            })
        })
        .await
    }
}
