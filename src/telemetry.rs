//! tracing set-up: human-readable by default, JSON with METERD__LOG__FORMAT=json.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// What `meterd bench` leaves out of its log: the progress lines of the load generator it
/// runs in the background (they belong to `meterd loadgen`), and sqlx's slow-statement
/// warnings, which quote whole seeding statements that are slow by design.
pub const BENCH_FILTER: &str = "meterd::loadgen=warn,sqlx::query=error";

/// Sets up logging: `RUST_LOG` when set, else the default filter plus `extra` directives.
pub fn init(format: LogFormat, extra: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| match extra {
        Some(extra) => EnvFilter::new(format!("{DEFAULT_FILTER},{extra}")),
        None => EnvFilter::new(DEFAULT_FILTER),
    });
    // Colours only for a person at a terminal: in a file or a pipe they are escape bytes.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
