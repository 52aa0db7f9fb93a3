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
    if as_json {
        println!(
            "{}",
            json!({"events": s.events, "projects": s.projects,
                   "dead_letters": s.dead_letters, "database_bytes": s.database_bytes})
        );
    } else {
        println!(
            "events:        {}\nprojects:      {}\ndead letters:  {}\ndatabase size: {} bytes",
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
