//! The `meterd` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use meterd::app::{self, ServeRole};
use meterd::config::Settings;
use meterd::ingest::{ErrorCode, dead_letters};
use meterd::{bench, loadgen, telemetry};

#[derive(Parser)]
#[command(
    name = "meterd",
    version,
    about = "Pay-per-use metering and billing for serverless platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Offered only by the commands that read configuration (`price`, `openapi` and
/// `completions` need none).
#[derive(Args)]
struct ConfigFile {
    /// A TOML file overriding config/default.toml (environment variables override both).
    #[arg(long, global = true, env = "METERD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: API, consumer and finalizer (or one role of them).
    Serve {
        #[arg(long, value_enum, default_value_t = ServeRole::All)]
        role: ServeRole,
        /// Also publish sample usage (a built-in loadgen), so a newcomer sees it flow.
        /// `METERD_DEMO=1` does the same (docker compose passes it through).
        #[arg(long, env = "METERD_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
        demo: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Create the database if needed and apply migrations.
    Migrate {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Finalize a billing period now (idempotent): prints the outcome as JSON.
    Finalize {
        /// The period, YYYY-MM.
        #[arg(long)]
        period: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Publish synthetic invocation records to the usage exchange.
    Loadgen {
        #[command(flatten)]
        options: loadgen::LoadgenOptions,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Price usage offline (no database): prints the invoice lines as JSON.
    Price {
        /// The plan, as for PUT /v1/plans/{plan}.
        #[arg(long)]
        plan: PathBuf,
        /// The usage: {"period": "2026-10", "usage": [{"function", "arch", "requests", "compute", "duration"}]}.
        #[arg(long)]
        usage: PathBuf,
    },
    /// Print the OpenAPI document of the REST API (JSON), as served at /openapi.json.
    Openapi,
    /// Measure throughput and resources; prints one JSON line.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Inspect the dead-letter queue, or replay dead letters whose cause is fixed.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Issue, list and revoke API keys (finance, ingest, tenant), straight in the database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Print a shell completion script: `meterd completions bash > /etc/bash_completion.d/meterd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The configuration file named for a command that reads configuration.
    fn config_file(&self) -> Option<&std::path::Path> {
        match self {
            Command::Serve { config, .. }
            | Command::Migrate { config }
            | Command::Finalize { config, .. }
            | Command::Loadgen { config, .. }
            | Command::Bench { config, .. }
            | Command::DeadLetters { config, .. }
            | Command::Keys { config, .. } => config.config.as_deref(),
            Command::Price { .. } | Command::Openapi | Command::Completions { .. } => None,
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key and print it as JSON: the `key` is shown only this once.
    Issue {
        /// finance, ingest or tenant.
        #[arg(long)]
        role: String,
        /// The tenant of a tenant key.
        #[arg(long)]
        tenant: Option<String>,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z); never if absent.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List every issued key, oldest first (never the key itself).
    List {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every meterd process refuses it from its next request on.
    Revoke {
        /// The key's id (from `issue` or `list`).
        id: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Show dead letters (error code, reason, routing key, body preview), oldest first,
    /// leaving them all in the queue.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters unchanged to the usage exchange (with confirms), removing each
    /// once the broker has it; the others stay. Fix the cause first (e.g. the config);
    /// replaying twice never counts twice.
    Replay {
        /// Only dead letters with this x-meterd-error code (e.g. invalid_value); all if absent.
        #[arg(long)]
        code: Option<ErrorCode>,
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// AMQP ingestion: the broker's raw consume ceiling against meterd end to end.
    Ingest(bench::IngestBenchOptions),
    /// The upcoming-invoice endpoint under concurrent clients, for a large tenant.
    Api(bench::api::ApiBenchOptions),
    /// Finance export: streams usage.csv of N seeded rows; rows/s and RSS growth.
    Export(bench::ExportBenchOptions),
    /// Memory under concurrent large ingest bodies: peak and settled RSS of a child
    /// `serve`, with the configured ingest budget and with none.
    Bodies(bench::bodies::BodiesBenchOptions),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Offline commands: no configuration, database or runtime needed.
    match &cli.command {
        Command::Price { plan, usage } => return price(plan, usage),
        // The document comes from the code alone.
        Command::Openapi => return openapi(),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "meterd", &mut script);
            return print_out(String::from_utf8_lossy(&script).trim_end());
        }
        _ => {}
    }
    let settings = Settings::load(cli.command.config_file())?;
    let bench = matches!(cli.command, Command::Bench { .. });
    telemetry::init(
        settings.log.format,
        bench.then_some(telemetry::BENCH_FILTER),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.runtime.worker_threads.get())
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { role, demo, .. } => serve(settings, role, demo).await,
        Command::Migrate { .. } => {
            meterd::db::migrate(&settings.database).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        Command::Loadgen { options, .. } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            loadgen::run(&settings.amqp, options, shutdown).await?;
            Ok(())
        }
        Command::Price { .. } | Command::Openapi | Command::Completions { .. } => {
            unreachable!("offline commands return before the runtime starts")
        }
        Command::Finalize { period, .. } => {
            let period = meterd::billing::period::period_param("--period", &period)?;
            let pool = meterd::db::migrate(&settings.database).await?;
            let config = meterd::billing::store::BillingConfig::from_settings(&settings);
            let outcome =
                meterd::billing::store::finalize_period(&pool, &config, period, chrono::Utc::now())
                    .await?;
            print_out(serde_json::to_string(&outcome)?)?;
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Api(options),
            ..
        } => {
            print_out(bench::api::run(&settings, &options).await?)?;
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Ingest(options),
            ..
        } => {
            let summary = bench::ingest_rounds(&settings, &options, |report| {
                // A progress line lost to a closed pipe is no reason to stop measuring.
                let _ = print_out(report);
            })
            .await?;
            if let Some(summary) = summary {
                print_out(summary)?;
            }
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Bodies(options),
            ..
        } => {
            let summary = bench::bodies::run(&settings, &options, |report| {
                // A progress line lost to a closed pipe is no reason to stop measuring.
                let _ = print_out(report);
            })
            .await?;
            print_out(summary)?;
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Export(options),
            ..
        } => {
            let report = bench::export(&settings, &options).await?;
            print_out(report)?;
            Ok(())
        }
        Command::Keys { command, .. } => keys(&settings, command).await,
        Command::DeadLetters {
            command: DeadLettersCommand::List { limit, json },
            ..
        } => {
            let listing = dead_letters::list(&settings.amqp, limit).await?;
            if json {
                for letter in &listing.letters {
                    print_out(serde_json::to_string(letter)?)?;
                }
            } else {
                print_out(listing)?;
            }
            Ok(())
        }
        Command::DeadLetters {
            command: DeadLettersCommand::Replay { code, limit, json },
            ..
        } => {
            let outcome = dead_letters::replay(&settings.amqp, code, limit).await?;
            if json {
                print_out(serde_json::to_string(&outcome)?)?;
            } else {
                print_out(outcome)?;
            }
            Ok(())
        }
    }
}

async fn keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    use meterd::keys::{self, KeySpec};
    let pool = meterd::db::migrate(&settings.database).await?;
    match command {
        KeysCommand::Issue {
            role,
            tenant,
            expires_at,
        } => {
            let spec = KeySpec::parse(
                &role,
                tenant.as_deref(),
                expires_at.as_deref(),
                chrono::Utc::now(),
            )?;
            let store = meterd::metering::MeterStore::new(
                pool.clone(),
                settings.metering.clone(),
                settings.billing.default_plan.clone(),
            );
            let issued = keys::issue(&store, &pool, spec).await?;
            print_out(serde_json::to_string(&issued)?)?;
        }
        KeysCommand::List { json } => {
            let mut after = None;
            let show = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            };
            if !json {
                print_out("id\trole\ttenant\tcreated_at\texpires_at\tlast_used_at\tstatus")?;
            }
            loop {
                let (page, next) = keys::list(&pool, after, 1000).await?;
                for key in &page {
                    if json {
                        print_out(serde_json::to_string(key)?)?;
                    } else {
                        let status = if key.revoked {
                            "revoked"
                        } else if key.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
                            "expired"
                        } else {
                            "active"
                        };
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{status}",
                            key.id,
                            key.role,
                            key.tenant.as_deref().unwrap_or("-"),
                            show(Some(key.created_at)),
                            show(key.expires_at),
                            show(key.last_used_at),
                        );
                    }
                }
                match next {
                    Some(cursor) => after = Some(cursor),
                    None => break,
                }
            }
        }
        KeysCommand::Revoke { id } => {
            anyhow::ensure!(keys::revoke(&pool, id).await?, "no API key {id}");
            print_out(format!("revoked {id}"))?;
        }
    }
    Ok(())
}

fn price(plan: &std::path::Path, usage: &std::path::Path) -> anyhow::Result<()> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let priced = meterd::rating::price_files(&read(plan)?, &read(usage)?)?;
    print_out(priced)?;
    Ok(())
}

fn openapi() -> anyhow::Result<()> {
    print_out(meterd::api::openapi::document())
}

/// Writes one result line to stdout. A reader that has gone (`meterd openapi | head -c 300`)
/// wanted no more: that is not a failure, and certainly not a panic as `println!` makes it.
fn print_out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("write to stdout"),
    }
}

async fn serve(settings: Settings, role: ServeRole, demo: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let amqp = settings.amqp.clone();
    let running = app::start(settings, role, shutdown.clone()).await?;
    if demo {
        let demo_shutdown = shutdown.clone();
        tokio::spawn(async move {
            tracing::info!("demo: publishing sample usage (5 tenants, 200 events/s)");
            if let Err(e) =
                loadgen::run(&amqp, loadgen::LoadgenOptions::default(), demo_shutdown).await
            {
                tracing::error!(error = format!("{e:#}"), "demo loadgen stopped");
            }
        });
    }
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    match tokio::time::timeout(std::time::Duration::from_secs(10), running.wait()).await {
        Ok(()) => Ok(()),
        Err(_) => anyhow::bail!("shutdown took longer than 10 s"),
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
}
