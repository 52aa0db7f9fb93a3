//! The CLI subcommands other than `serve`.

use std::path::Path;

use anyhow::Context;
use orrery_core::config::{Config, redact_url};
use orrery_core::store::{KeyKind, Project, Store};
use serde_json::json;

async fn open(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(config).await?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating {}", redact_url(&config.effective_database_url())))?;
    Ok(store)
}

/// `orrery init`: data directory, secrets, database, a first project and
/// its keys, printed once.
///
/// # Errors
/// When the data directory, secrets or database fail.
pub async fn init(mut config: Config, name: &str, as_json: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    crate::settings::ensure_secrets(&mut config)?;
    let store = open(&config).await?;
    let existing = store.list_projects(None).await?;
    if !existing.is_empty() {
        if as_json {
            println!(
                "{}",
                json!({"initialised": false, "projects": existing.len()})
            );
        } else {
            println!(
                "already initialised: {} project(s) in {}. Keys are shown only when created; \
                 make new ones with the admin API (POST /api/v1/projects/{{id}}/keys).",
                existing.len(),
                redact_url(&config.effective_database_url())
            );
        }
        return Ok(());
    }
    let FirstProject {
        project,
        public_key,
        secret_key,
    } = first_project(&store, name).await?;
    if as_json {
        println!(
            "{}",
            json!({
                "initialised": true,
                "project_id": project.id,
                "project_name": project.name,
                "public_key": public_key,
                "secret_key": secret_key,
            })
        );
    } else {
        println!(
            "Orrery initialised (data: {}, database: {})\n\n\
             Project:     {} ({})\n\
             Public key:  {}\n             can only send events; safe to embed in web pages\n\
             Secret key:  {}\n             admin: reads and administers every project; keep it secret\n\n\
             These keys are shown only now; only their SHA-256 hashes are stored.\n\
             Start the server with `orrery serve`.",
            config.data_dir.display(),
            redact_url(&config.effective_database_url()),
            project.name,
            project.id,
            public_key,
            secret_key,
        );
    }
    Ok(())
}

/// A project made by [`first_project`], with its keys in plain text (shown
/// once; only their hashes are stored).
#[derive(Debug, Clone)]
pub struct FirstProject {
    /// The project.
    pub project: Project,
    /// Its public key (`pk_...`), for sending events.
    pub public_key: String,
    /// Its admin secret key (`sk_...`).
    pub secret_key: String,
}

/// Creates a project with a public key and an admin secret key: what
/// `orrery init` does on an empty database, and what in-process tests start
/// from.
///
/// # Errors
/// When the database fails.
pub async fn first_project(store: &Store, name: &str) -> anyhow::Result<FirstProject> {
    let project = store.create_project(name).await?;
    let public = store
        .create_key(project.id, "default public key", KeyKind::Public, false)
        .await?;
    let secret = store
        .create_key(project.id, "admin secret key", KeyKind::Secret, true)
        .await?;
    Ok(FirstProject {
        project,
        public_key: public.plaintext,
        secret_key: secret.plaintext,
    })
}

/// `orrery migrate`.
///
/// # Errors
/// When the database fails.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    open(&config).await?;
    println!(
        "database {} is up to date",
        redact_url(&config.effective_database_url())
    );
    Ok(())
}

/// `orrery backup --output FILE`.
///
/// # Errors
/// On PostgreSQL, when the file exists, or when the copy fails.
pub async fn backup(config: Config, output: &Path) -> anyhow::Result<()> {
    let store = open(&config).await?;
    store.backup(output).await?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!("backup written to {} ({size} bytes)", output.display());
    Ok(())
}

/// `orrery stats`.
///
/// # Errors
/// When the database fails.
pub async fn stats(config: Config, as_json: bool) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let s = store.stats().await?;
    let size = store.rollup_size().await?;
    let (rollup_rows, rollup_hour_packs) = (size.rows, size.hour_packs);
    let (rollup_day_rows, rollup_bytes) = (size.day_rows, size.bytes);
    let (persons, person_index_bytes) = store.person_index_size().await?;
    let hour = orrery_core::event::now_ms().div_euclid(orrery_core::analytics::HOUR_MS);
    let pending = store.pending_rollups(hour).await?;
    let pending_days = store.pending_days(hour.div_euclid(24)).await?;
    if as_json {
        println!(
            "{}",
            json!({"events": s.events, "projects": s.projects,
                   "dead_letters": s.dead_letters, "database_bytes": s.database_bytes,
                   "rollup_rows": rollup_rows, "rollup_bytes": rollup_bytes,
                   "rollup_hour_packs": rollup_hour_packs, "rollup_day_rows": rollup_day_rows,
                   "rollup_pending_hours": pending, "rollup_pending_days": pending_days,
                   "persons": persons,
                   "person_index_bytes": person_index_bytes})
        );
    } else {
        println!(
            "events:        {}\nprojects:      {}\ndead letters:  {}\ndatabase size: {} bytes\n\
             rollups:       {rollup_rows} hourly rows, {rollup_hour_packs} hourly and \
             {rollup_day_rows} daily packs, about \
             {rollup_bytes} bytes; {pending} hours and {pending_days} days waiting to be rolled up\n\
             person index:  {persons} people, about {person_index_bytes} bytes",
            s.events, s.projects, s.dead_letters, s.database_bytes
        );
    }
    Ok(())
}

/// `orrery vacuum`.
///
/// # Errors
/// When the database fails.
pub async fn vacuum(config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let before = store.stats().await?.database_bytes;
    store.vacuum().await?;
    let after = store.stats().await?.database_bytes;
    println!("vacuum done: {before} -> {after} bytes");
    Ok(())
}

/// `orrery user create --email E [--admin]`: the password from the first
/// line of standard input, or generated and printed when there is none.
///
/// # Errors
/// A bad e-mail or password, a taken e-mail, the database error.
pub async fn user_create(config: Config, email: &str, admin: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let email = crate::accounts::normalize_email(email).map_err(|e| anyhow::anyhow!(e.message))?;
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !stdin.is_terminal() {
        stdin.lock().read_line(&mut line)?;
    }
    let given = line.trim_end_matches(['\r', '\n']).to_owned();
    let generated = given.is_empty();
    let password = if generated {
        let mut bytes = [0u8; 18];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    } else {
        given
    };
    crate::accounts::check_password("password", &password)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let mut config = config;
    crate::settings::ensure_secrets(&mut config)?;
    let store = open(&config).await?;
    let accounts = std::sync::Arc::new(crate::accounts::Accounts::new(&config));
    let hash = accounts
        .hash_password(&password)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let account = store.create_account(&email, &hash, admin, false).await?;
    println!(
        "created {} account {} ({})",
        if admin { "administrator" } else { "the" },
        account.email,
        account.id
    );
    if generated {
        println!("password (shown once): {password}");
    }
    Ok(())
}

/// `orrery rollups rebuild [--project ID] [--from T] [--to T]`.
///
/// # Errors
/// A time that does not parse, or the database error.
pub async fn rollups_rebuild(
    config: Config,
    project: Option<uuid::Uuid>,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let time = |flag: &str, v: Option<&str>, default: i64| -> anyhow::Result<i64> {
        v.map_or(Ok(default), |v| {
            crate::api::params::Time::parse(v)
                .map(|t| t.0)
                .map_err(|m| anyhow::anyhow!("--{flag} {m}"))
        })
    };
    let from = time("from", from, 0)?;
    let to = time("to", to, orrery_core::event::now_ms() + 1)?;
    anyhow::ensure!(to > from, "--to must be after --from");
    let store = open(&config).await?;
    if let Some(p) = project {
        store.get_project(p).await?;
    }
    let started = std::time::Instant::now();
    let hours = orrery_core::analytics::rollup::rebuild(&store, project, from, to).await?;
    println!(
        "rebuilt the rollups of {hours} hours in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The plugin hosts for the `plugin` commands: no disk cache, no server;
/// Python plugins run in workers of this binary as zygote, started only
/// for a Python plugin.
fn local_catalog() -> anyhow::Result<orrery_plugins::custom::Catalog> {
    let metrics = orrery_core::metrics::PluginMetrics::default();
    let host = orrery_plugins::custom::wasm::WasmHost::new(None, metrics.clone())?;
    let python = crate::custom_plugins::python_host(true, metrics)?;
    Ok(orrery_plugins::custom::Catalog::new(std::sync::Arc::new(host)).with_python(python))
}

/// `orrery plugin check PATH`: the checks an upload passes (compiles and
/// fits the plugin world, or loads in the Python sandbox; `configure`
/// accepts the config of `NAME.toml`; a sample event goes through),
/// without a server.
///
/// # Errors
/// The first check that fails, named.
pub fn plugin_check(path: &Path) -> anyhow::Result<()> {
    let source = orrery_plugins::custom::catalog::read_source(path).map_err(anyhow::Error::msg)?;
    let catalog = local_catalog()?;
    let plugin = catalog
        .check(source)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let loads = match plugin.kind {
        orrery_plugins::custom::PluginKind::Wasm => "compiles and fits the plugin world",
        orrery_plugins::custom::PluginKind::Python => "loads in the Python sandbox",
    };
    println!(
        "ok: plugin `{}` ({}, {} bytes, version {})\n  {loads}\n  \
         `configure` accepts its config {}\n  a sample event went through `process`",
        plugin.name,
        plugin.kind.as_str(),
        plugin.size,
        plugin.sha256,
        serde_json::Value::Object(plugin.config.clone()),
    );
    Ok(())
}

/// `orrery plugin test PATH --events FILE.jsonl [--config JSON]`: runs the
/// plugin over sample events (one client event object per line, as sent
/// to `POST /api/v1/events`) and prints each verdict and changed event,
/// with timings.
///
/// # Errors
/// A bad events file (line and field named), a bad config, or what the
/// plugin met.
pub fn plugin_test(path: &Path, events: &Path, config: Option<&str>) -> anyhow::Result<()> {
    use orrery_core::event::{EventLimits, RequestContext, now_ms, parse_event};
    let source = orrery_plugins::custom::catalog::read_source(path).map_err(anyhow::Error::msg)?;
    let config = match config {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            Ok(_) => anyhow::bail!("--config must be a JSON object"),
            Err(e) => anyhow::bail!("--config is not JSON: {e}"),
        },
    };
    let text =
        std::fs::read_to_string(events).with_context(|| format!("reading {}", events.display()))?;
    let context = std::sync::Arc::new(RequestContext::default());
    let mut batch = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", events.display(), i + 1))?;
        let limits = EventLimits {
            max_event_bytes: orrery_core::config::IngestConfig::default().max_event_bytes,
        };
        let event = parse_event(&value, uuid::Uuid::nil(), now_ms(), limits).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: `{}`: {}",
                events.display(),
                i + 1,
                e.field,
                e.reason
            )
        })?;
        batch.push(orrery_core::event::Envelope {
            event,
            context: std::sync::Arc::clone(&context),
        });
    }
    anyhow::ensure!(!batch.is_empty(), "{} holds no events", events.display());
    let catalog = local_catalog()?;
    let report = orrery_plugins::custom::run_once(&catalog, &source, config.as_ref(), &mut batch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (i, (env, verdict)) in batch.iter().zip(&report.verdicts).enumerate() {
        match verdict {
            orrery_core::plugin::Verdict::Keep => println!(
                "#{} keep {}",
                i + 1,
                serde_json::to_string(&env.event).unwrap_or_default()
            ),
            orrery_core::plugin::Verdict::Drop(reason) => println!("#{} drop {reason}", i + 1),
            orrery_core::plugin::Verdict::Fail(error) => println!("#{} fail {error}", i + 1),
        }
    }
    let n = batch.len();
    let (compiled, run) = match source.kind {
        orrery_plugins::custom::PluginKind::Wasm => ("compiled", "instantiate"),
        orrery_plugins::custom::PluginKind::Python => ("read", "start a worker"),
    };
    println!(
        "plugin `{}` version {}: {compiled} in {:.1} ms; {n} event(s) in {:.3} ms \
         ({run}, configure and one batch; {:.1} µs/event)",
        source.name,
        report.sha256,
        report.compile.as_secs_f64() * 1e3,
        report.run.as_secs_f64() * 1e3,
        report.run.as_secs_f64() * 1e6 / n as f64,
    );
    Ok(())
}
