//! The `meterd` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// A TOML file overriding config/default.toml (environment variables override both).
    #[arg(long, global = true, env = "METERD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: API, consumer and finalizer (or one role of them).
    Serve {
        #[arg(long, value_enum, default_value_t = ServeRole::All)]
        role: ServeRole,
        /// Also publish sample usage (a built-in loadgen), so a newcomer sees it flow.
        #[arg(long)]
        demo: bool,
    },
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Finalize a billing period now (idempotent): prints the outcome as JSON.
    Finalize {
        /// The period, YYYY-MM.
        #[arg(long)]
        period: String,
    },
    /// Publish synthetic invocation records to the usage exchange.
    Loadgen(loadgen::LoadgenOptions),
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
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect the dead-letter queue, or replay dead letters whose cause is fixed.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
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
    if let Command::Price { plan, usage } = &cli.command {
        // Offline: no configuration, database or runtime needed.
        return price(plan, usage);
    }
    if let Command::Openapi = &cli.command {
        // Offline too: the document comes from the code alone.
        return openapi();
    }
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(settings.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.runtime.worker_threads.get())
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { role, demo } => serve(settings, role, demo).await,
        Command::Migrate => {
            meterd::db::migrate(&settings.database).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        Command::Loadgen(options) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            loadgen::run(&settings.amqp, options, shutdown).await?;
            Ok(())
        }
        Command::Price { plan, usage } => price(&plan, &usage),
        Command::Openapi => openapi(),
        Command::Finalize { period } => {
            let period = meterd::billing::period::period_param("--period", &period)?;
            let pool = meterd::db::migrate(&settings.database).await?;
            let config = meterd::billing::store::BillingConfig::from_settings(&settings);
            let outcome =
                meterd::billing::store::finalize_period(&pool, &config, period, chrono::Utc::now())
                    .await?;
            println!("{}", serde_json::to_string(&outcome)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Api(options)) => {
            println!("{}", bench::api::run(&settings, &options).await?);
            Ok(())
        }
        Command::Bench(BenchCommand::Ingest(options)) => {
            let summary =
                bench::ingest_rounds(&settings, &options, |report| println!("{report}")).await?;
            if let Some(summary) = summary {
                println!("{summary}");
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Bodies(options)) => {
            let summary =
                bench::bodies::run(&settings, &options, |report| println!("{report}")).await?;
            println!("{summary}");
            Ok(())
        }
        Command::Bench(BenchCommand::Export(options)) => {
            let report = bench::export(&settings, &options).await?;
            println!("{report}");
            Ok(())
        }
        Command::DeadLetters(DeadLettersCommand::List { limit, json }) => {
            let listing = dead_letters::list(&settings.amqp, limit).await?;
            if json {
                for letter in &listing.letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!("{listing}");
            }
            Ok(())
        }
        Command::DeadLetters(DeadLettersCommand::Replay { code, limit, json }) => {
            let outcome = dead_letters::replay(&settings.amqp, code, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                println!("{outcome}");
            }
            Ok(())
        }
    }
}

fn price(plan: &std::path::Path, usage: &std::path::Path) -> anyhow::Result<()> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let priced = meterd::rating::price_files(&read(plan)?, &read(usage)?)?;
    println!("{priced}");
    Ok(())
}

fn openapi() -> anyhow::Result<()> {
    println!("{}", meterd::api::openapi::document());
    Ok(())
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
