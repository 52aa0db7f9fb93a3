//! The SQL endpoint's gate: a caller's query is parsed with a real SQL
//! parser (in the dialect of the database), checked, and rewritten so
//! that it can read only the caller's project, through three views
//! (`events`, `sessions`, `rollups`); what runs is the rewritten syntax
//! tree printed back, never the caller's text.
//!
//! What passes:
//! - exactly one statement, a query: `SELECT`, set operations, `VALUES`
//!   and CTEs (`WITH`, also `RECURSIVE`), at any depth; no `SELECT INTO`,
//!   no locking clause, no data-changing CTE;
//! - tables: only the three views and the query's own CTEs, named with one
//!   identifier (no schema, no database, no table-valued function: not
//!   `main.events`, `sqlite_master`, `pragma_table_info(...)`,
//!   `pg_catalog.pg_tables`, `generate_series(...)`);
//! - functions: a fixed list of pure ones (aggregates, window functions,
//!   text, numbers, JSON, dates), none that reads files, sleeps, runs SQL,
//!   reads settings, or can build a huge value;
//! - casts to the usual scalar types only.
//!
//! Every table reference is renamed to a name starting with
//! `__orrery_`, which no table of the database has: a view becomes the
//! CTE that selects the caller's rows, a CTE of the query keeps its
//! (renamed) definition, and a reference that would escape a CTE's scope
//! finds no table at all. References keep their written name as an alias,
//! so `events.name` still works.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    DataType, Expr, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, SetExpr,
    Statement, TableAlias, TableFactor, VisitMut, VisitorMut, visit_relations,
};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use uuid::Uuid;

use super::Dim;

/// The views a query can read.
pub const VIEWS: [&str; 3] = ["events", "sessions", "rollups"];
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 20_000;
/// Deepest nesting the parser follows.
const MAX_DEPTH: usize = 50;

/// The functions a query may call (lower case).
const FUNCTIONS: &[&str] = &[
    // Aggregates.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "total",
    "group_concat",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    // Window functions.
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // Conditionals and numbers.
    "coalesce",
    "ifnull",
    "nullif",
    "iif",
    "greatest",
    "least",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "sign",
    "mod",
    "power",
    "pow",
    "sqrt",
    "exp",
    "ln",
    "log",
    "log10",
    "div",
    "width_bucket",
    // Text.
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "substr",
    "substring",
    "trim",
    "ltrim",
    "rtrim",
    "btrim",
    "replace",
    "instr",
    "strpos",
    "position",
    "concat",
    "concat_ws",
    "left",
    "right",
    "split_part",
    "starts_with",
    "reverse",
    "initcap",
    "unicode",
    "char",
    "chr",
    "ascii",
    "hex",
    "md5",
    "quote",
    "quote_literal",
    "like",
    "glob",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "typeof",
    // JSON.
    "json",
    "json_extract",
    "json_array_length",
    "json_type",
    "json_valid",
    "json_quote",
    "json_object",
    "json_array",
    "json_group_array",
    "json_group_object",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_typeof",
    "json_typeof",
    "jsonb_array_length",
    "to_json",
    "to_jsonb",
    "json_build_object",
    "jsonb_build_object",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    // Dates.
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "date_trunc",
    "date_part",
    "extract",
    "to_timestamp",
    "to_char",
    "to_date",
    "age",
    "now",
    "current_timestamp",
    "current_date",
    "make_date",
    "make_timestamp",
    "make_timestamptz",
    "date_bin",
];

/// Types a query may cast to (the first word of the type, lower case).
const CASTS: &[&str] = &[
    "int",
    "integer",
    "bigint",
    "smallint",
    "int2",
    "int4",
    "int8",
    "real",
    "float",
    "float4",
    "float8",
    "double",
    "decimal",
    "numeric",
    "text",
    "varchar",
    "char",
    "character",
    "string",
    "boolean",
    "bool",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "uuid",
    "blob",
];

/// Whether a query may cast to `t`.
fn castable(t: &DataType) -> bool {
    let text = t.to_string().to_lowercase();
    let word = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    CASTS.contains(&word) && !text.contains('[')
}

/// The database a query is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// SQLite's dialect.
    Sqlite,
    /// PostgreSQL's dialect.
    Postgres,
}

impl Flavor {
    fn dialect(self) -> Box<dyn Dialect> {
        match self {
            Flavor::Sqlite => Box::new(SQLiteDialect {}),
            Flavor::Postgres => Box::new(PostgreSqlDialect {}),
        }
    }
}

/// The prefix of every table name a checked query refers to.
const PREFIX: &str = "__orrery_";

fn view_name(view: &str) -> String {
    format!("{PREFIX}view_{view}")
}

fn cte_name(name: &str) -> String {
    format!("{PREFIX}cte_{name}")
}

/// The one identifier of a name, lower case (`None` when qualified or a
/// function part).
fn single(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.to_lowercase()),
        _ => None,
    }
}

/// Why a query is refused.
pub type Refusal = String;

/// Checks that `body` (and everything below it) only selects.
fn only_selects(body: &SetExpr) -> Result<(), Refusal> {
    match body {
        SetExpr::Select(s) => {
            if s.into.is_some() {
                return Err("SELECT INTO writes a table: only reading queries run here".into());
            }
            Ok(())
        }
        SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            only_selects(left)?;
            only_selects(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err("a query that changes data: only reading queries run here".into())
        }
        SetExpr::Table(_) => Err("TABLE x: write SELECT * FROM x".into()),
    }
}

/// The checker and renamer.
struct Gate {
    ctes: HashSet<String>,
}

impl VisitorMut for Gate {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Refusal> {
        if let Err(e) = only_selects(&query.body) {
            return ControlFlow::Break(e);
        }
        if !query.locks.is_empty() || query.for_clause.is_some() {
            return ControlFlow::Break("a locking or FOR clause: only plain reads run here".into());
        }
        if query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return ControlFlow::Break("a clause this endpoint does not run".into());
        }
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                let name = cte.alias.name.value.to_lowercase();
                cte.alias.name = Ident::new(cte_name(&name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Refusal> {
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    return ControlFlow::Break(format!(
                        "`{name}(...)`: table-valued functions are not available; read {}",
                        VIEWS.join(", ")
                    ));
                }
                let Some(written) = single(name) else {
                    return ControlFlow::Break(format!(
                        "`{name}`: name a view ({}) or a CTE of the query, without a schema",
                        VIEWS.join(", ")
                    ));
                };
                let target = if self.ctes.contains(&written) {
                    cte_name(&written)
                } else if VIEWS.contains(&written.as_str()) {
                    view_name(&written)
                } else {
                    return ControlFlow::Break(format!(
                        "unknown table `{written}`: the views are {} (and the query's CTEs)",
                        VIEWS.join(", ")
                    ));
                };
                let original = match name.0.as_slice() {
                    [ObjectNamePart::Identifier(i)] => i.clone(),
                    _ => Ident::new(&written),
                };
                *name = ObjectName::from(vec![Ident::new(target)]);
                if alias.is_none() {
                    *alias = Some(TableAlias {
                        name: original,
                        columns: Vec::new(),
                    });
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(format!(
                "`{other}`: only views, CTEs and subqueries can be read here"
            )),
        }
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Refusal> {
        match expr {
            Expr::Function(f) => {
                let known = single(&f.name).filter(|n| FUNCTIONS.contains(&n.as_str()));
                if known.is_none() {
                    return ControlFlow::Break(format!(
                        "function `{}` is not available here (only pure functions on the \
                         rows: aggregates, window, text, number, JSON and date functions)",
                        f.name
                    ));
                }
                if !matches!(f.parameters, FunctionArguments::None) {
                    return ControlFlow::Break(format!("`{}`: parameters are not taken", f.name));
                }
                ControlFlow::Continue(())
            }
            Expr::Cast { data_type, .. } if !castable(data_type) => {
                ControlFlow::Break(format!("a cast to `{data_type}`: cast to a plain type"))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The CTE of one view: the rows of `project`.
fn view_sql(view: &str, flavor: Flavor, project: Uuid) -> String {
    let pg = flavor == Flavor::Postgres;
    // A literal made here from a UUID: nothing of the caller's.
    let (schema, project) = if pg {
        ("public", format!("'{project}'::uuid"))
    } else {
        ("main", format!("X'{}'", project.simple()))
    };
    match view {
        "events" => {
            let id = if pg {
                "id::text".to_owned()
            } else {
                let part = |a: u32, n: u32| format!("substr(hex(id), {a}, {n})");
                format!(
                    "lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {})",
                    part(1, 8),
                    part(9, 4),
                    part(13, 4),
                    part(17, 4),
                    part(21, 12)
                )
            };
            format!(
                "SELECT {id} AS id, name, \"timestamp\", received_at, distinct_id, session_id, \
                 visitor_id, ip_hash, url, referrer, user_agent, properties, enrichment \
                 FROM {schema}.events WHERE project_id = {project}"
            )
        }
        "sessions" => format!(
            "SELECT session_id, visitor_id, distinct_id, started_at, ended_at, duration_ms, \
             events, pageviews, bounce, entry_page, exit_page \
             FROM {schema}.sessions WHERE project_id = {project}"
        ),
        _ => {
            let dims: String = Dim::ALL
                .iter()
                .map(|d| format!(" WHEN {} THEN '{}'", d.code(), d.name()))
                .collect();
            format!(
                "SELECT hour * 3600000 AS start, CASE dim WHEN 0 THEN 'total'{dims} END AS \
                 dimension, NULLIF(value, '') AS value, events, pageviews, sessions, bounces, \
                 duration_ms, session_pageviews \
                 FROM {schema}.rollups WHERE project_id = {project}"
            )
        }
    }
}

/// Parses, checks and rewrites `text` for `flavor`: the SQL to run, which
/// reads only `project`'s rows.
///
/// # Errors
/// Why the query is refused, for the caller.
pub fn gate(text: &str, flavor: Flavor, project: Uuid) -> Result<String, Refusal> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!("longer than {MAX_QUERY_BYTES} bytes"));
    }
    let dialect = flavor.dialect();
    let mut statements = Parser::new(dialect.as_ref())
        .with_recursion_limit(MAX_DEPTH)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| format!("not a query this endpoint reads: {e}"))?;
    if statements.len() != 1 {
        return Err(format!(
            "{} statements: send exactly one SELECT",
            statements.len()
        ));
    }
    let Some(Statement::Query(query)) = statements.first_mut() else {
        return Err("only a SELECT (or WITH ... SELECT) runs here".into());
    };
    // The query's own CTE names, at any depth.
    let mut ctes = HashSet::new();
    collect_ctes(query, &mut ctes);
    if let Some(v) = VIEWS.iter().find(|v| ctes.contains(**v)) {
        return Err(format!(
            "a CTE named `{v}` would hide the view of that name"
        ));
    }
    // Relations are checked again by the gate; this finds qualified
    // names in places the table-factor visit does not reach.
    let qualified = visit_relations(&**query, |r| {
        if single(r).is_none() {
            ControlFlow::Break(r.to_string())
        } else {
            ControlFlow::Continue(())
        }
    });
    if let ControlFlow::Break(name) = qualified {
        return Err(format!("`{name}`: name a view or a CTE, without a schema"));
    }
    if let ControlFlow::Break(why) = query.visit(&mut Gate { ctes }) {
        return Err(why);
    }
    // The views, as CTEs before the query's own.
    let prefix = VIEWS
        .iter()
        .map(|v| format!("{} AS ({})", view_name(v), view_sql(v, flavor, project)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut views = Parser::new(dialect.as_ref())
        .try_with_sql(&format!("WITH {prefix} SELECT 1"))
        .and_then(|mut p| p.parse_query())
        .map_err(|e| format!("internal: the views do not parse: {e}"))?;
    let mut view_ctes = views.with.take().map(|w| w.cte_tables).unwrap_or_default();
    match &mut query.with {
        Some(with) => {
            view_ctes.append(&mut with.cte_tables);
            with.cte_tables = view_ctes;
        }
        None => {
            query.with = Some(sqlparser::ast::With {
                with_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
                recursive: false,
                cte_tables: view_ctes,
            });
        }
    }
    Ok(query.to_string())
}

fn collect_ctes(query: &Query, out: &mut HashSet<String>) {
    struct Names<'a>(&'a mut HashSet<String>);
    impl sqlparser::ast::Visitor for Names<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(cte.alias.name.value.to_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = sqlparser::ast::Visit::visit(query, &mut Names(out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: &str) -> String {
        gate(q, Flavor::Sqlite, Uuid::nil()).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn refused(q: &str, flavor: Flavor) -> String {
        match gate(q, flavor, Uuid::nil()) {
            Ok(sql) => panic!("{q} passed as {sql}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_pass_and_only_reach_the_views() {
        let sql = ok("SELECT name, count(*) FROM events GROUP BY name -- a comment");
        assert!(sql.contains("__orrery_view_events AS events"), "{sql}");
        assert!(!sql.contains("comment"));
        let sql = ok(
            "WITH a AS (SELECT * FROM events) SELECT a.name FROM a JOIN sessions s \
                      ON s.session_id = a.session_id",
        );
        assert!(sql.contains("__orrery_cte_a AS a"), "{sql}");
        assert!(sql.contains("__orrery_view_sessions AS s"), "{sql}");
        // Every table the printed query names is one of ours.
        ok(
            "SELECT * FROM rollups WHERE dimension = 'page' AND value IN \
            (SELECT url FROM events WHERE EXISTS (SELECT 1 FROM sessions))",
        );
        ok("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r");
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        let s = Flavor::Sqlite;
        let p = Flavor::Postgres;
        for (q, f, why) in [
            ("SELECT 1; SELECT 2", s, "2 statements"),
            ("DELETE FROM events", s, "only a SELECT"),
            ("PRAGMA table_info(events)", s, ""),
            ("ATTACH DATABASE '/tmp/x' AS x", s, ""),
            ("SELECT * FROM api_keys", s, "unknown table `api_keys`"),
            ("SELECT * FROM main.events", s, "without a schema"),
            ("SELECT * FROM sqlite_master", s, "unknown table"),
            (
                "SELECT * FROM pragma_table_info('events')",
                s,
                "table-valued",
            ),
            ("SELECT load_extension('x')", s, "function `load_extension`"),
            ("SELECT randomblob(1000000000)", s, "function `randomblob`"),
            (
                "SELECT pg_read_file('/etc/passwd')",
                p,
                "function `pg_read_file`",
            ),
            ("SELECT pg_sleep(100)", p, "function `pg_sleep`"),
            (
                "SELECT query_to_xml('select * from api_keys', true, true, '')",
                p,
                "query_to_xml",
            ),
            (
                "SELECT pg_catalog.lower('x')",
                p,
                "function `pg_catalog.lower`",
            ),
            ("SELECT * FROM pg_catalog.pg_tables", p, "without a schema"),
            ("SELECT * INTO t FROM events", p, "SELECT INTO"),
            ("SELECT * FROM events FOR UPDATE", p, "locking"),
            (
                "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
                p,
                "",
            ),
            ("SELECT 'x'::regclass", p, "cast"),
            (
                "WITH events AS (SELECT 1) SELECT * FROM events",
                s,
                "hide the view",
            ),
            ("SELECT * FROM generate_series(1, 10)", p, "table-valued"),
            ("SELECT current_user", p, ""),
        ] {
            let e = refused(q, f);
            assert!(e.contains(why), "{q}: {e}");
        }
        // Not the Latin `e`: a different name, so an unknown table.
        let e = refused("SELECT * FROM \u{0435}vents", s);
        assert!(e.contains("unknown table"), "{e}");
    }

    #[test]
    fn a_cte_out_of_its_scope_names_no_real_table() {
        // `projects` as a CTE inside a subquery, referred to outside it:
        // renamed, so it cannot fall through to the real table.
        let sql = ok(
            "SELECT * FROM (WITH projects AS (SELECT 1 AS x) SELECT * FROM projects) q, \
                      projects",
        );
        assert!(
            !sql.contains(" projects,") && !sql.contains("FROM projects"),
            "{sql}"
        );
    }
}
