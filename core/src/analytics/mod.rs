//! Analytics: hourly rollups and the queries that read them.
//!
//! - [`sketch`]: unique-visitor sets, exact while small, HyperLogLog
//!   beyond (error stated there).
//! - [`dims`]: the dimensions (page, referrer, UTM, location, browser...)
//!   and JSON property paths, read from an event.
//! - [`aggregate`]: the one aggregation that builds a rollup from an
//!   hour's raw events and answers a query from raw events.
//! - [`rollup`]: redoing an hour; the job and `orrery rollups rebuild`.
//! - [`funnel`]: ordered steps within a conversion window, per person.
//! - [`retention`]: cohorts by first-seen period and their later activity.
//! - [`persons`]: the person index (dense person numbers, per-hour event
//!   and activity blobs) that answers funnels and retention.
//! - [`sql`]: the SQL endpoint's parser gate and rewrite to the views.
//! - [`query`]: overview, time series and breakdowns over a time range,
//!   reading completed, unchanged hours from rollups and everything else
//!   (the current hour, hours changed since their rollup, partial hours at
//!   the edges of the range) from raw events.

pub mod aggregate;
pub mod dims;
pub mod funnel;
pub mod persons;
pub mod query;
pub mod retention;
pub mod rollup;
pub mod sketch;
pub mod sql;

pub use aggregate::{Filter, Metrics, Op};
pub use dims::{Dim, Dimension, EventFacts, SessionFacts};
pub use sketch::{VisitorSet, visitor_hash};

/// One hour in milliseconds: rollups are per hour since the epoch (UTC).
pub const HOUR_MS: i64 = 3_600_000;
