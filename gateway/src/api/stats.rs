//! Statistics: overview, time series and breakdowns of a project's events
//! over a time range, with filters. Answered from hourly rollups where
//! they hold the answer and from raw events elsewhere (see
//! `orrery_core::analytics`).

use std::borrow::Cow;

use chrono_tz::Tz;
use orrery_core::analytics::query::{self, Interval, Query as StatsQuery, named_range};
use orrery_core::analytics::{Dimension, Filter, Metrics, Op};
use orrery_core::event::now_ms;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{RangeParam, Time, enum_schema, rfc3339_ms, scalar_type, text_param};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, app_state};

/// Longest filter, in characters.
const MAX_FILTER_CHARS: usize = 500;
/// Largest breakdown page.
pub(crate) const MAX_BREAKDOWN_LIMIT: u64 = 1000;
/// Breakdown page when `limit` is not given.
pub(crate) const DEFAULT_BREAKDOWN_LIMIT: u64 = 10;

/// The names of the rolled-up dimensions, `|`-separated for a pattern.
fn dimension_names() -> String {
    orrery_core::analytics::Dim::ALL
        .map(orrery_core::analytics::Dim::name)
        .join("|")
}

/// A property path as a pattern: as `Dimension::parse` takes it.
const PROPERTY_PATTERN: &str = r"properties(\.[^.:\u0000-\u001F\u007F-\u009F]{1,200}){1,8}";

text_param!(
    /// A time-series interval.
    IntervalParam(Interval),
    "string(interval)",
    enum_schema(["hour", "day", "week", "month"]),
    Interval::parse
);

text_param!(
    /// An IANA time zone. (The schema states the shape of a zone name, not
    /// the list of zones: a name of that shape that is no zone is a 400.)
    TzParam(Tz),
    "string(tz)",
    {
        let mut s = MetaSchema::new("string");
        s.pattern = Some(r"^[A-Za-z0-9_+\-/]{1,64}$".to_owned());
        s
    },
    |v| {
        v.parse::<Tz>()
            .ok()
            .filter(|t| t.name() == v)
            .ok_or_else(|| format!("`{v}` is not an IANA time zone (e.g. Europe/Berlin)"))
    }
);

text_param!(
    /// A dimension: a rolled-up one or a property path.
    DimensionParam(Dimension),
    "string(dimension)",
    {
        let mut s = MetaSchema::new("string");
        s.pattern = Some(format!("^({}|{PROPERTY_PATTERN})$", dimension_names()));
        s
    },
    Dimension::parse
);

text_param!(
    /// A filter: `DIMENSION:OP:VALUE`.
    FilterParam(Filter),
    "string(filter)",
    {
        let mut s = MetaSchema::new("string");
        s.pattern = Some(format!("^{}$", filter_pattern()));
        s.max_length = Some(MAX_FILTER_CHARS);
        s
    },
    parse_filter
);

/// What `parse_filter` takes, as a pattern (without anchors).
pub(crate) fn filter_pattern() -> String {
    let value = r"[^\u0000-\u001F\u007F-\u009F]";
    let listed = r"[^|\u0000-\u001F\u007F-\u009F]+";
    format!(
        "({}|{PROPERTY_PATTERN}):((eq|neq|contains):{value}+|in:{listed}(\\|{listed})*)",
        dimension_names()
    )
}

text_param!(
    /// A breakdown page size.
    TopLimit(u64),
    "integer(top)",
    {
        let mut s = MetaSchema::new_with_format("integer", "int64");
        s.minimum = Some(1.0);
        s.maximum = Some(MAX_BREAKDOWN_LIMIT as f64);
        s.default = Some(Value::from(DEFAULT_BREAKDOWN_LIMIT));
        s
    },
    |v| {
        v.parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_BREAKDOWN_LIMIT).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {MAX_BREAKDOWN_LIMIT}"))
    }
);

/// Parses one `filter`: `DIMENSION:OP:VALUE`, OP `eq`, `neq`, `contains`
/// or `in` (values separated by `|`), values without control characters.
pub(crate) fn parse_filter(text: &str) -> Result<Filter, String> {
    if text.chars().count() > MAX_FILTER_CHARS {
        return Err(format!("longer than {MAX_FILTER_CHARS} characters"));
    }
    let mut parts = text.splitn(3, ':');
    let (Some(dim), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "`{text}` is not DIMENSION:OP:VALUE (e.g. country:eq:DE)"
        ));
    };
    let dimension = Dimension::parse(dim)?;
    let op = match op {
        "eq" => Op::Eq,
        "neq" => Op::Neq,
        "contains" => Op::Contains,
        "in" => Op::In,
        _ => {
            return Err(format!(
                "unknown operator `{op}`: one of eq, neq, contains, in"
            ));
        }
    };
    let values: Vec<String> = if op == Op::In {
        value.split('|').map(str::to_owned).collect()
    } else {
        vec![value.to_owned()]
    };
    if values.iter().any(String::is_empty) {
        return Err(format!(
            "`{text}` has an empty value (events without a value match `neq`)"
        ));
    }
    if values.iter().any(|v| v.chars().any(char::is_control)) {
        return Err("a value has a control character".to_owned());
    }
    Ok(Filter {
        dimension,
        op,
        values,
    })
}

/// The numbers of a period (or a bucket, or a breakdown value).
#[derive(Debug, Clone, Object)]
pub struct Summary {
    /// Events.
    pub events: i64,
    /// Unique visitors: distinct `distinct_id`, else `visitor_id`, else
    /// IP hash. Exact up to 2,048 visitors per hour and 100,000 per
    /// answer, a HyperLogLog estimate (standard error 0.81%) beyond.
    pub visitors: u64,
    /// Whether `visitors` is exact.
    pub visitors_exact: bool,
    /// Sessions that started in the period.
    pub sessions: i64,
    /// Page views (`pageview`, `$pageview` or `page_view` events).
    pub pageviews: i64,
    /// Page views per session, of the sessions counted.
    pub views_per_session: f64,
    /// Share (0 to 1) of the sessions with at most one page view.
    pub bounce_rate: f64,
    /// Mean session duration (first to last event), ms.
    pub avg_session_duration_ms: f64,
}

impl From<&Metrics> for Summary {
    fn from(m: &Metrics) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let per_session = |x: i64| {
            if m.sessions == 0 {
                0.0
            } else {
                round(x as f64 / m.sessions as f64)
            }
        };
        Self {
            events: m.events,
            visitors: m.visitors.count(),
            visitors_exact: m.visitors.is_exact(),
            sessions: m.sessions,
            pageviews: m.pageviews,
            views_per_session: per_session(m.session_pageviews),
            bounce_rate: per_session(m.bounces),
            avg_session_duration_ms: per_session(m.duration_ms),
        }
    }
}

/// Four decimals: enough for a rate, stable for comparisons.
pub(crate) fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Overview of a period and of the period of equal length before it.
#[derive(Debug, Clone, Object)]
pub struct Overview {
    /// Start of the period, RFC 3339 (inclusive).
    pub from: String,
    /// End of the period, RFC 3339 (exclusive).
    pub to: String,
    /// The period.
    pub current: Summary,
    /// Start of the previous period.
    pub previous_from: String,
    /// The previous period, for comparison.
    pub previous: Summary,
}

/// One bucket of a time series.
#[derive(Debug, Clone, Object)]
pub struct Point {
    /// Start of the bucket, RFC 3339 (UTC).
    pub start: String,
    /// Its numbers.
    #[oai(flatten)]
    pub summary: Summary,
}

/// A time series.
#[derive(Debug, Clone, Object)]
pub struct Timeseries {
    /// `hour`, `day`, `week` or `month`.
    pub interval: String,
    /// The IANA time zone of the bucket boundaries.
    pub tz: String,
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// Every bucket of the range, in order; zeros where nothing happened.
    pub points: Vec<Point>,
}

/// One value of a breakdown.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BreakdownRow {
    /// The value; absent for events (or sessions) without one.
    pub value: Option<String>,
    /// Its numbers.
    #[oai(flatten)]
    pub summary: Summary,
}

/// Top values of a dimension.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Breakdown {
    /// The dimension.
    pub by: String,
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// Values by visitors, then events (most first), then value.
    pub rows: Vec<BreakdownRow>,
    /// Values in all.
    pub total_values: u64,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<u64>,
}

/// Statistics.
pub struct StatsApi;

/// The cached answer to this request (same path and query string) or
/// the one `compute` gives, kept for the next identical request. The
/// project is looked up first, every time: a deleted project is a 404,
/// not a cached answer. (The key's access to the project was checked by
/// the security scheme: another project's key is a 404 there, as on every
/// project route.)
pub(crate) async fn cached<T, F>(
    req: &Request,
    project: Uuid,
    reads: Option<&'static str>,
    compute: F,
) -> ApiResult<Json<T>>
where
    T: Clone + Send + Sync + 'static,
    F: std::future::Future<Output = ApiResult<T>>,
{
    let state = app_state(req);
    state.store.get_project(project).await?;
    past_query_stages(state, project, reads).await?;
    let key = format!("{}?{}", req.uri().path(), req.uri().query().unwrap_or(""));
    if let Some(answer) = state.stats_cache.get::<T>(project, &key) {
        return Ok(Json(answer));
    }
    let generation = state.stats_cache.generation(project);
    let answer = compute.await?;
    state
        .stats_cache
        .put(project, key, generation, answer.clone());
    Ok(Json(answer))
}

/// What of a question's dimensions a project's query stages may hide: a
/// property (in a breakdown or a filter), for [`past_query_stages`].
pub(crate) fn property_read<'a>(
    dims: impl IntoIterator<Item = &'a Dimension>,
) -> Option<&'static str> {
    dims.into_iter()
        .any(|d| matches!(d, Dimension::Property(_)))
        .then_some("a property (in a breakdown or a filter)")
}

/// Refuses a question that reads `reads` (a property, the distinct ids,
/// the stored rows) on a project with query stages. Statistics come from
/// rollups and raw rows, which the stages (custom plugins run on reads)
/// never see, so such an answer could show what they exist to hide; the
/// numbers of the built-in dimensions (counts, pages, referrers...) stay
/// available, and the events API applies the stages.
///
/// # Errors
/// 409 `query_stages_apply`, naming what the question reads.
pub(crate) async fn past_query_stages(
    state: &AppState,
    project: Uuid,
    reads: Option<&str>,
) -> Result<(), ApiError> {
    let Some(what) = reads else { return Ok(()) };
    if state
        .pipelines
        .query_for_project(&state.store, project)
        .await
        .is_some()
    {
        return Err(ApiError::new(
            ErrorCode::QueryStagesApply,
            format!(
                "project {project} has query stages, which statistics and SQL cannot apply, and \
                 this question reads {what}, which they may hide: read events through \
                 `GET .../events` (it applies them), or remove the query stages"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn bad(parameter: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidParameter,
        format!("`{parameter}`: {message}"),
    )
}

/// The time range `[from, to)` the range parameters describe: `range`
/// (ending now), or `from` and `to`; `7d` when none is given. Called
/// inside [`cached`], which has looked the project up.
pub(crate) async fn range_of(
    state: &AppState,
    project: Uuid,
    range: Option<RangeParam>,
    from: Option<Time>,
    to: Option<Time>,
) -> Result<(i64, i64), ApiError> {
    let now = now_ms();
    Ok(match (range.map(|r| r.0), from, to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(bad(
                "range",
                "give either `range` or `from` and `to`, not both",
            ));
        }
        (Some(name), None, None) => {
            let first = if name == "all" {
                state.store.first_event_at(project).await?
            } else {
                None
            };
            named_range(&name, now, first).map_err(|m| bad("range", m))?
        }
        (None, Some(f), Some(t)) => {
            if t.0 <= f.0 {
                return Err(bad("to", "must be after `from`"));
            }
            (f.0, t.0)
        }
        (None, Some(_), None) => return Err(bad("to", "is required with `from`")),
        (None, None, Some(_)) => return Err(bad("from", "is required with `to`")),
        (None, None, None) => named_range("7d", now, None).map_err(|m| bad("range", m))?,
    })
}

/// The query the common parameters describe.
pub(crate) async fn query_of(
    state: &AppState,
    project: Uuid,
    range: Option<RangeParam>,
    from: Option<Time>,
    to: Option<Time>,
    filters: Option<Vec<FilterParam>>,
) -> Result<StatsQuery, ApiError> {
    let (from, to) = range_of(state, project, range, from, to).await?;
    Ok(StatsQuery {
        project,
        from,
        to,
        filters: filters.into_iter().flatten().map(|f| f.0).collect(),
    })
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Stats")]
impl StatsApi {
    /// Overview
    ///
    /// Events, unique visitors, sessions, page views, views per session,
    /// bounce rate and average session duration of a period, with the
    /// period of equal length before it. The period is `range` (`24h`,
    /// `7d`, `30d`, `90d`, `12mo`, `all`; ending now) or `from` and `to`;
    /// `7d` when neither is given. `filter` (repeatable, all must match):
    /// `DIMENSION:OP:VALUE` with OP `eq`, `neq`, `contains` or `in`
    /// (values separated by `|`), e.g. `country:eq:DE`,
    /// `properties.plan:in:pro|team`.
    #[oai(
        path = "/projects/:project_id/stats/overview",
        method = "get",
        operation_id = "stats_overview"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn overview(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// `24h`, `7d`, `30d`, `90d`, `12mo` or `all` (not with `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// `DIMENSION:OP:VALUE`, repeatable (at most 20).
        #[oai(validator(max_items = 20))]
        filter: Query<Option<Vec<FilterParam>>>,
    ) -> ApiResult<Json<Overview>> {
        let reads = property_read(filter.0.iter().flatten().map(|f| &f.0.dimension));
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let q = query_of(state, project_id.0, range.0, from.0, to.0, filter.0).await?;
            let now = now_ms();
            let prev = q.previous();
            let current = query::totals(&state.store, &q, now).await?;
            let previous = query::totals(&state.store, &prev, now).await?;
            Ok(Overview {
                from: rfc3339_ms(q.from),
                to: rfc3339_ms(q.to),
                current: (&current).into(),
                previous_from: rfc3339_ms(prev.from),
                previous: (&previous).into(),
            })
        })
        .await
    }

    /// Time series
    ///
    /// The overview's numbers per `interval` (`hour`, `day`, `week` from
    /// Monday, `month`; default `day`) with bucket boundaries in the IANA
    /// time zone `tz` (default `UTC`), every bucket of the range listed,
    /// zeros included. Same `range`, `from`, `to` and `filter` as the
    /// overview; at most 10,000 buckets.
    #[oai(
        path = "/projects/:project_id/stats/timeseries",
        method = "get",
        operation_id = "stats_timeseries"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn timeseries(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// `24h`, `7d`, `30d`, `90d`, `12mo` or `all` (not with `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// `DIMENSION:OP:VALUE`, repeatable (at most 20).
        #[oai(validator(max_items = 20))]
        filter: Query<Option<Vec<FilterParam>>>,
        /// `hour`, `day` (default), `week` or `month`.
        interval: Query<Option<IntervalParam>>,
        /// IANA time zone, e.g. `Europe/Berlin` (default `UTC`).
        tz: Query<Option<TzParam>>,
    ) -> ApiResult<Json<Timeseries>> {
        let reads = property_read(filter.0.iter().flatten().map(|f| &f.0.dimension));
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let every = interval.0.map_or(Interval::Day, |i| i.0);
            let zone = tz.0.map_or(Tz::UTC, |t| t.0);
            let q = query_of(state, project_id.0, range.0, from.0, to.0, filter.0).await?;
            let buckets = every
                .buckets(zone, q.from, q.to)
                .map_err(|m| bad("interval", m))?;
            let series =
                query::timeseries(&state.store, &q, every, zone, buckets, now_ms()).await?;
            Ok(Timeseries {
                interval: every.name().to_owned(),
                tz: zone.name().to_owned(),
                from: rfc3339_ms(q.from),
                to: rfc3339_ms(q.to),
                points: series
                    .iter()
                    .map(|(start, m)| Point {
                        start: rfc3339_ms(*start),
                        summary: m.into(),
                    })
                    .collect(),
            })
        })
        .await
    }

    /// Breakdown
    ///
    /// The values of one dimension with the overview's numbers each, most
    /// visitors first. `by`: `page`, `entry_page`, `exit_page`,
    /// `referrer_source`, `referrer_host`, `utm_source`, `utm_medium`,
    /// `utm_campaign`, `country`, `region`, `city`, `browser`, `os`,
    /// `device`, `event`, or a property path `properties.NAME[.NAME]`.
    /// Entry and exit page count sessions (by start), with their events
    /// and page views. Same `range`, `from`, `to` and `filter` as the
    /// overview; `limit` (1 to 1000, default 10) values from `offset`.
    #[oai(
        path = "/projects/:project_id/stats/breakdown",
        method = "get",
        operation_id = "stats_breakdown"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn breakdown(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// The dimension.
        by: Query<DimensionParam>,
        /// `24h`, `7d`, `30d`, `90d`, `12mo` or `all` (not with `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// `DIMENSION:OP:VALUE`, repeatable (at most 20).
        #[oai(validator(max_items = 20))]
        filter: Query<Option<Vec<FilterParam>>>,
        /// Values per page, 1 to 1000 (default 10).
        limit: Query<Option<TopLimit>>,
        /// Values to skip (the `next_offset` of the previous page).
        offset: Query<Option<u64>>,
    ) -> ApiResult<Json<Breakdown>> {
        let reads = property_read(
            std::iter::once(&by.0.0).chain(filter.0.iter().flatten().map(|f| &f.0.dimension)),
        );
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let dimension = by.0.0;
            let limit = limit.0.map_or(DEFAULT_BREAKDOWN_LIMIT, |l| l.0);
            let offset = usize::try_from(offset.0.unwrap_or(0)).unwrap_or(usize::MAX);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let q = query_of(state, project_id.0, range.0, from.0, to.0, filter.0).await?;
            let page =
                query::breakdown(&state.store, &q, &dimension, now_ms(), (offset, limit)).await?;
            let end = offset.saturating_add(page.rows.len());
            let next_offset = (end < page.total).then_some(end as u64);
            Ok(Breakdown {
                by: dimension.name(),
                from: rfc3339_ms(q.from),
                to: rfc3339_ms(q.to),
                rows: page
                    .rows
                    .into_iter()
                    .map(|(value, m)| BreakdownRow {
                        value,
                        summary: Summary::from(&m),
                    })
                    .collect(),
                total_values: page.total as u64,
                next_offset,
            })
        })
        .await
    }
}
