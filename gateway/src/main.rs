//! `orrery`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use orrery_core::config::{Config, LogFormat};
use orrery_gateway::settings::{self, CliOverrides};
use tracing_subscriber::EnvFilter;

/// Orrery: self-hosted, plugin-extensible event gateway for product and web
/// analytics.
#[derive(Debug, Parser)]
#[command(name = "orrery", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Configuration file (TOML). Default: ./orrery.toml when it exists.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, generated secrets).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    #[command(alias = "start")]
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Create the data directory, database and secrets, and a first project
    /// with its keys (printed once).
    Init {
        /// Name of the first project.
        #[arg(long, default_value = "default")]
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Write a consistent copy of the SQLite database, also while serving.
    Backup {
        /// The file to write (must not exist).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Print counts of events and projects and the database size.
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reclaim disk space and refresh the query planner's statistics.
    Vacuum,
    /// Print the OpenAPI document.
    Openapi,
    /// Print the effective configuration, secrets hidden.
    Config,
    /// Develop custom plugins without a server.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Hourly rollups of the analytics queries.
    Rollups {
        #[command(subcommand)]
        command: RollupsCommand,
    },
    /// Accounts that log in.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account. The password is read from the first line of
    /// standard input (`echo "$PASSWORD" | orrery user create ...`); with
    /// none, one is generated and printed once.
    Create {
        /// Its e-mail address.
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Make it an instance administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RollupsCommand {
    /// Recompute the rollups of the hours that have events or rollups, from
    /// the raw events; idempotent, safe while serving.
    Rebuild {
        /// Only this project (default: every project).
        #[arg(long, value_name = "ID")]
        project: Option<uuid::Uuid>,
        /// From this time (RFC 3339 or ms; default: the beginning).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Up to this time, exclusive (RFC 3339 or ms; default: now).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin over sample events and print each verdict and changed
    /// event, with timings. `--config JSON` gives the plugin's config (a
    /// JSON object, or a file holding one) instead of its `NAME.toml`'s.
    Test {
        /// The plugin (`NAME.wasm` or `NAME.py`; its `NAME.toml` beside it is
        /// read).
        path: PathBuf,
        /// Sample events, one JSON object per line, as sent to
        /// `POST /api/v1/events`.
        #[arg(long, value_name = "FILE.jsonl")]
        events: PathBuf,
    },
    /// Check a plugin as an upload is checked: compiles, fits the plugin
    /// world, accepts its config, passes a sample event.
    Check {
        /// The plugin (`NAME.wasm` or `NAME.py`; its `NAME.toml` beside it is
        /// read).
        path: PathBuf,
    },
}

/// The `--config` of `orrery plugin test`: JSON text as given, or the
/// content of the file it names.
fn plugin_config(arg: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(arg) = arg else {
        return Ok(None);
    };
    let text = arg.to_string_lossy();
    if text.trim_start().starts_with('{') {
        return Ok(Some(text.into_owned()));
    }
    std::fs::read_to_string(arg)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", arg.display()))
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// mimalloc instead of glibc's malloc: the request path allocates a lot
/// from several threads, where glibc's arenas spent about a sixth of the
/// server's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The Python sandbox's zygote is this binary re-executed; it must take
    // over before anything else (no runtime, no logging, no config).
    if std::env::args().nth(1).as_deref() == Some(orrery_sandbox::python::ZYGOTE_SUBCOMMAND) {
        orrery_sandbox::python::zygote_main();
    }
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", orrery_gateway::openapi_json());
        return ExitCode::SUCCESS;
    }
    if let Command::Plugin { command } = &cli.command {
        let result = match command {
            // The global `--config` is the plugin's config here (no server
            // configuration is read): JSON text, or a file holding it.
            PluginCommand::Test { path, events } => {
                match plugin_config(cli.global.config.as_deref()) {
                    Ok(config) => {
                        orrery_gateway::commands::plugin_test(path, events, config.as_deref())
                    }
                    Err(e) => Err(e),
                }
            }
            PluginCommand::Check { path } => orrery_gateway::commands::plugin_check(path),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let overrides = CliOverrides {
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        listen: match &cli.command {
            Command::Serve { listen } => listen.clone(),
            _ => None,
        },
    };
    let config = match settings::load(cli.global.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => orrery_gateway::server::serve(config).await,
            Command::Init { name, json } => {
                orrery_gateway::commands::init(config, &name, json).await
            }
            Command::Migrate => orrery_gateway::commands::migrate(config).await,
            Command::Backup { output } => orrery_gateway::commands::backup(config, &output).await,
            Command::Stats { json } => orrery_gateway::commands::stats(config, json).await,
            Command::Vacuum => orrery_gateway::commands::vacuum(config).await,
            Command::Rollups {
                command: RollupsCommand::Rebuild { project, from, to },
            } => {
                orrery_gateway::commands::rollups_rebuild(
                    config,
                    project,
                    from.as_deref(),
                    to.as_deref(),
                )
                .await
            }
            Command::User {
                command: UserCommand::Create { email, admin },
            } => orrery_gateway::commands::user_create(config, &email, admin).await,
            Command::Config => {
                print!("{}", settings::render(&config)?);
                Ok(())
            }
            Command::Openapi | Command::Plugin { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
