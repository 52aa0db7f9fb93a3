//! The raw reads behind the per-person questions (funnels, retention) and
//! the raw side of statistics: events as the aggregation reads them, and
//! per-person aggregates done by the database.
//!
//! A person is who the statistics count as a visitor: the event's
//! `distinct_id`, else its `visitor_id`, else its IP hash.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::analytics::{Dim, Dimension, EventFacts, HOUR_MS, visitor_hash};

/// The person of an event, in SQL.
const PERSON: &str = "COALESCE(distinct_id, visitor_id, ip_hash)";

/// What an event read returns besides name, time and person.
#[derive(Debug, Clone, Copy)]
pub struct EventColumns<'a> {
    /// Only events with one of these names (all when `None`).
    pub names: Option<&'a [String]>,
    /// Read the enrichment (dimensions other than the event name).
    pub enrichment: bool,
    /// Read the properties (property paths).
    pub properties: bool,
}

impl<'a> EventColumns<'a> {
    /// The columns that reading `dims` needs: the enrichment for the
    /// dimensions other than the event name, the properties for property
    /// paths.
    pub fn reading<'d>(
        names: Option<&'a [String]>,
        dims: impl IntoIterator<Item = &'d Dimension>,
    ) -> Self {
        let mut cols = Self {
            names,
            enrichment: false,
            properties: false,
        };
        for d in dims {
            match d {
                Dimension::Rolled(Dim::Event) => {}
                Dimension::Rolled(_) => cols.enrichment = true,
                Dimension::Property(_) => cols.properties = true,
            }
        }
        cols
    }
}

/// `name = ?` when a name is given (its value added to `values`).
fn name_condition(values: &mut Vec<sea_orm::Value>, name: Option<&str>) -> &'static str {
    name.map_or("", |n| {
        values.push(n.into());
        " AND name = ?"
    })
}

impl Store {
    /// The events of `project` with a time in `[from, to)`, with the
    /// columns `cols` asks for (the others empty).
    ///
    /// # Errors
    /// The database error.
    pub async fn event_facts(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        cols: &EventColumns<'_>,
    ) -> Result<Vec<EventFacts>, StoreError> {
        let postgres = self.backend() == sea_orm::DatabaseBackend::Postgres;
        let column = |c: &str, wanted: bool| match (wanted, postgres) {
            (false, _) => "NULL".to_owned(),
            (true, true) => format!("{c}::text"),
            (true, false) => c.to_owned(),
        };
        let mut values: Vec<sea_orm::Value> = vec![project.into(), from.into(), to.into()];
        let names = match cols.names {
            None => String::new(),
            Some(names) => {
                values.extend(names.iter().map(|n| n.as_str().into()));
                format!(" AND name IN ({})", vec!["?"; names.len()].join(", "))
            }
        };
        let sql = format!(
            "SELECT seq, name, \"timestamp\", {PERSON}, session_id, {}, {}, {} FROM events \
             WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?{names}",
            column("url", cols.enrichment),
            column("enrichment", cols.enrichment),
            column("properties", cols.properties),
        );
        let rows = self.rows(&sql, values).await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let visitor: Option<String> = r.try_get_by_index(3)?;
            let enrichment: Option<String> = r.try_get_by_index(6)?;
            let props: Option<String> = r.try_get_by_index(7)?;
            events.push(EventFacts {
                seq: r.try_get_by_index(0)?,
                name: r.try_get_by_index(1)?,
                timestamp: r.try_get_by_index(2)?,
                visitor: visitor.as_deref().map(visitor_hash),
                session_id: r.try_get_by_index(4)?,
                url: r.try_get_by_index(5)?,
                enrichment: enrichment.as_deref().map(json_map).unwrap_or_default(),
                properties: props.as_deref().map(json_map),
            });
        }
        Ok(events)
    }

    /// Every person of `project` with an event (named `name`, when given)
    /// before `before`, and the time of their first such event, ms.
    ///
    /// # Errors
    /// The database error.
    pub async fn first_seen(
        &self,
        project: Uuid,
        before: i64,
        name: Option<&str>,
    ) -> Result<Vec<(u64, i64)>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![project.into(), before.into()];
        let named = name_condition(&mut values, name);
        let rows = self
            .rows(
                &format!(
                    "SELECT {PERSON}, MIN(\"timestamp\") FROM events \
                     WHERE project_id = ? AND \"timestamp\" < ?{named} GROUP BY {PERSON}"
                ),
                values,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let person: Option<String> = r.try_get_by_index(0)?;
            if let Some(p) = person {
                out.push((visitor_hash(&p), r.try_get_by_index(1)?));
            }
        }
        Ok(out)
    }

    /// The hours in `[from, to)` in which each person of `project` had an
    /// event (named `name`, when given): one row per person and UTC hour,
    /// with the first and last event time in it, ms. (Any period boundary,
    /// even at :30 or :45, cuts an hour at most once, so the first and
    /// last time tell on which sides of it the person was active.)
    ///
    /// # Errors
    /// The database error.
    pub async fn active_hours(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        name: Option<&str>,
    ) -> Result<Vec<(u64, i64, i64)>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![project.into(), from.into(), to.into()];
        let named = name_condition(&mut values, name);
        let rows = self
            .rows(
                &format!(
                    "SELECT {PERSON}, MIN(\"timestamp\"), MAX(\"timestamp\") FROM events \
                     WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?{named} \
                     GROUP BY {PERSON}, \"timestamp\" / {HOUR_MS}"
                ),
                values,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let person: Option<String> = r.try_get_by_index(0)?;
            if let Some(p) = person {
                out.push((
                    visitor_hash(&p),
                    r.try_get_by_index(1)?,
                    r.try_get_by_index(2)?,
                ));
            }
        }
        Ok(out)
    }
}

/// A JSON object column (`{}` when it is not one).
fn json_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
