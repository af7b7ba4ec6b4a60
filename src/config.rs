//! Typed settings: the defaults compiled in from `config/default.toml`, then an optional
//! file named by `--config`, then `METERD__SECTION__KEY` environment variables, then
//! `DATABASE_URL` / `AMQP_URL`.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::metering::MeteringRules;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The key `serve` warns about while it is in use.
pub const DEV_ADMIN_KEY: &str = "dev-admin-key-change-me";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub metering: MeteringRules,
    pub billing: BillingSettings,
    pub log: LogSettings,
    pub runtime: RuntimeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Threads of the runtime that runs the consumer and the periodic tasks (HTTP requests
    /// are served by actix's own worker threads).
    pub worker_threads: std::num::NonZeroUsize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: String,
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Most unacked deliveries per consumer (the prefetch adapts below it).
    pub prefetch: u16,
    /// About how many events may be in flight per consumer: bounds memory when messages
    /// are large arrays.
    pub max_events_in_flight: usize,
    pub batch_max_events: usize,
    pub batch_max_messages: usize,
    pub batch_linger_ms: u64,
    /// Batches recorded at once, each on its own database connection (acks stay in order).
    pub writers: usize,
    pub connection_name: String,
    /// PEM file of CA certificates trusted for `amqps://`, besides the webpki roots.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// The type of both queues: RabbitMQ's replicated `quorum` queues, or `classic` ones.
    pub queue_type: QueueType,
    /// Quorum queues only: deliveries of one message without an ack (the consumer crashed or
    /// lost its connection each time) before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Declares the queues with `x-expires` (milliseconds): test and bench queues vanish
    /// by themselves if their owner dies. Unset in production.
    #[serde(default)]
    pub queue_expires_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    /// Seconds a client has to send a request body once its headers arrived (`408` after).
    pub body_read_timeout_secs: u64,
    /// Most bytes of ingest bodies held in memory at once, over all requests; a body that
    /// would go beyond it is refused with `503` and `Retry-After` instead of waiting.
    pub ingest_buffer_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub admin_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    pub grace_period_secs: u64,
    pub default_plan: String,
    pub invoice_prefix: String,
    /// Whether `serve` finalizes ended periods by itself.
    pub auto_finalize: bool,
    /// How often the finalizer looks for periods to finalize.
    pub finalize_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// Loads the settings from the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Loads the settings from an explicit environment, so tests need not touch the
    /// process-wide one. Every problem names the key at fault and where it was set: an
    /// unknown key (a typo would otherwise be silently ignored), a number out of range, a URL
    /// that does not parse.
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Settings> {
        use config::{Config, File, FileFormat};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).required(true));
        }
        // Which variable set each key, to name it in errors.
        let mut from_env: Vec<(String, &str)> = Vec::new();
        for (name, value) in env {
            if let Some(key) = name.strip_prefix("METERD__") {
                let key = key.to_ascii_lowercase().replace("__", ".");
                builder = builder.set_override(key.as_str(), value.as_str())?;
                from_env.push((key, name.as_str()));
            }
        }
        for (name, key) in [("DATABASE_URL", "database.url"), ("AMQP_URL", "amqp.url")] {
            if let Some((_, value)) = env.iter().find(|(n, _)| n == name) {
                builder = builder.set_override(key, value.as_str())?;
                from_env.push((key.to_owned(), name));
            }
        }
        let config = builder.build().context("cannot read the configuration")?;
        // The file alone, to tell whether a key came from it or from the defaults.
        let file_only = match file {
            Some(path) => Some(Config::builder().add_source(File::from(path)).build()?),
            None => None,
        };
        let origin = |key: &str| -> String {
            if let Some((_, name)) = from_env.iter().rev().find(|(k, _)| k == key) {
                return format!("{key} (set by {name})");
            }
            match (file, &file_only) {
                (Some(path), Some(only)) if only.get::<config::Value>(key).is_ok() => {
                    format!("{key} (in {})", path.display())
                }
                _ => key.to_owned(),
            }
        };
        check_values(&config, &origin)?;
        let settings: Settings = config.try_deserialize().map_err(|e| explain(e, &origin))?;
        settings.check(&origin)?;
        Ok(settings)
    }

    /// What cannot be said by a type: URLs parse, addresses have a port.
    fn check(&self, origin: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        crate::db::connect_options(&self.database.url).map_err(|_| {
            anyhow::anyhow!(
                "{}: not a PostgreSQL URL (expected postgres://user@host:port/database, got {:?})",
                origin("database.url"),
                self.database.url
            )
        })?;
        self.amqp.url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            anyhow::anyhow!(
                "{}: not an AMQP URL (expected amqp://user:password@host:port/vhost): {e}",
                origin("amqp.url")
            )
        })?;
        let has_port = self
            .http
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        anyhow::ensure!(
            has_port,
            "{}: must be host:port, e.g. 127.0.0.1:8080 (got {:?})",
            origin("http.addr"),
            self.http.addr
        );
        self.metering
            .validate()
            .with_context(|| "invalid configuration".to_owned())
    }
}

/// The numeric keys and the whole numbers each allows, checked before the settings are
/// typed so that a bad value is reported as what is allowed rather than as a type error.
const NUMBERS: &[(&str, i128, i128)] = &[
    ("database.max_connections", 1, 10_000),
    ("amqp.prefetch", 1, u16::MAX as i128),
    ("amqp.max_events_in_flight", 1, u32::MAX as i128),
    ("amqp.batch_max_events", 1, u32::MAX as i128),
    ("amqp.batch_max_messages", 1, u32::MAX as i128),
    ("amqp.batch_linger_ms", 0, 3_600_000),
    ("amqp.writers", 1, 1024),
    ("amqp.queue_expires_ms", 1, u32::MAX as i128),
    ("metering.duration_granularity_ms", 1, 3_600_000),
    ("metering.min_duration_ms", 0, 365 * 24 * 3_600_000),
    ("metering.memory_granularity_mb", 1, 1 << 20),
    ("metering.min_memory_mb", 0, 1 << 20),
    ("metering.max_duration_ms", 1, 365 * 24 * 3_600_000),
    ("metering.max_event_age_days", 1, 3650),
    ("billing.grace_period_secs", 0, 366 * 24 * 3600),
    ("billing.finalize_interval_secs", 1, 24 * 3600),
    ("runtime.worker_threads", 1, 1024),
];

/// The keys that take one of a few words.
const CHOICES: &[(&str, &[&str])] = &[("log.format", &["pretty", "json"])];

fn check_values(config: &config::Config, origin: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
    for &(key, words) in CHOICES {
        if let Ok(value) = config.get::<config::Value>(key) {
            let shown = value.to_string();
            anyhow::ensure!(
                words.contains(&shown.as_str()),
                "{}: must be {} (got {shown:?})",
                origin(key),
                words.join(" or ")
            );
        }
    }
    for &(key, min, max) in NUMBERS {
        let Ok(value) = config.get::<config::Value>(key) else {
            continue; // absent: optional, or reported as missing when typed
        };
        let shown = value.to_string();
        let number = shown.trim().parse::<i128>().ok();
        if !number.is_some_and(|n| (min..=max).contains(&n)) {
            anyhow::bail!(
                "{}: must be a whole number from {min} to {max} (got {shown:?})",
                origin(key)
            );
        }
    }
    Ok(())
}

/// Turns a typing error into one sentence naming the key (and where it was set).
fn explain(error: config::ConfigError, origin: &dyn Fn(&str) -> String) -> anyhow::Error {
    use config::ConfigError;
    let (key, inner) = match error {
        ConfigError::At {
            error,
            key: Some(key),
            ..
        } => (Some(key), error.to_string()),
        ConfigError::Type {
            key: Some(ref key), ..
        } => (Some(key.clone()), error.to_string()),
        ConfigError::NotFound(key) => {
            return anyhow::anyhow!("missing configuration key {key}");
        }
        other => (None, other.to_string()),
    };
    // serde: "unknown field `adrr`, expected `addr`" (or "expected one of …").
    if let Some(rest) = inner.strip_prefix("unknown field `")
        && let Some((field, hint)) = rest.split_once('`')
    {
        let full = match &key {
            Some(section) => format!("{section}.{field}"),
            None => field.to_owned(),
        };
        let hint = hint.trim_start_matches(", ");
        return anyhow::anyhow!("unknown configuration key {}; {hint}", origin(&full));
    }
    match key {
        Some(key) => anyhow::anyhow!(
            "{}: {}",
            origin(&key),
            inner.split(" for key `").next().unwrap_or(&inner)
        ),
        None => anyhow::anyhow!("invalid configuration: {inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load_from(None, &[]).unwrap();
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1:5432/meterd");
        assert_eq!(s.amqp.exchange, "meterd.usage");
        assert_eq!(s.amqp.queue, "meterd.usage.events");
        assert_eq!(s.amqp.dead_letter_exchange, "meterd.usage.dlx");
        assert_eq!(s.amqp.dead_letter_queue, "meterd.usage.dead");
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert_eq!(s.metering.max_duration_ms, 3_600_000);
        assert_eq!(s.metering.max_event_age_days, 90);
        assert_eq!(s.billing.grace_period_secs, 3600);
        assert_eq!(s.billing.default_plan, "default");
        assert_eq!(s.billing.invoice_prefix, "INV");
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.amqp.queue_expires_ms, None);
        assert_eq!(s.runtime.worker_threads.get(), 1);
        assert_eq!(s.http.body_read_timeout_secs, 10);
        assert_eq!(s.http.ingest_buffer_bytes, 32 * 1024 * 1024);
        assert_eq!(s.amqp.queue_type, QueueType::Classic);
        assert_eq!(s.amqp.delivery_limit, 20);
        assert_eq!(s.amqp.tls_ca_file, None);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::load_from(
            None,
            &env(&[
                ("METERD__METERING__DURATION_GRANULARITY_MS", "100"),
                ("METERD__HTTP__ADDR", "0.0.0.0:9999"),
                ("METERD__AMQP__QUEUE_EXPIRES_MS", "60000"),
                ("METERD__LOG__FORMAT", "json"),
                ("METERD__AMQP__QUEUE_TYPE", "quorum"),
                ("DATABASE_URL", "postgres://postgres@db/x"),
                ("AMQP_URL", "amqp://mq"),
            ]),
        )
        .unwrap();
        assert_eq!(s.metering.duration_granularity_ms, 100);
        assert_eq!(s.http.addr, "0.0.0.0:9999");
        assert_eq!(s.amqp.queue_expires_ms, Some(60000));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.amqp.queue_type, QueueType::Quorum);
        assert_eq!(s.database.url, "postgres://postgres@db/x");
        assert_eq!(s.amqp.url, "amqp://mq");
    }

    #[test]
    fn a_zero_granularity_is_refused() {
        let err = Settings::load_from(
            None,
            &env(&[("METERD__METERING__MEMORY_GRANULARITY_MB", "0")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("memory_granularity_mb"),
            "{err:#}"
        );
    }

    #[test]
    fn the_runtime_needs_a_thread() {
        let s = Settings::load_from(None, &env(&[("METERD__RUNTIME__WORKER_THREADS", "3")]));
        assert_eq!(s.unwrap().runtime.worker_threads.get(), 3);
        let err = Settings::load_from(None, &env(&[("METERD__RUNTIME__WORKER_THREADS", "0")]))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("runtime.worker_threads"),
            "{err:#}"
        );
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", Settings::load_from(None, &env(pairs)).unwrap_err())
    }

    #[test]
    fn an_unknown_key_is_named_with_the_variable_that_set_it() {
        let err = refused(&[("METERD__HTTP__ADRR", "0.0.0.0:1")]);
        assert!(
            err.contains("http.adrr") && err.contains("METERD__HTTP__ADRR"),
            "{err}"
        );
        let err = refused(&[("METERD__HTTPS__ADDR", "0.0.0.0:1")]);
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn a_number_out_of_range_says_what_is_allowed() {
        for value in ["0", "-1", "x", "2.5"] {
            let err = refused(&[("METERD__METERING__MAX_EVENT_AGE_DAYS", value)]);
            assert!(
                err.contains("metering.max_event_age_days")
                    && err.contains("must be a whole number from 1 to 3650"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn urls_must_parse() {
        let err = refused(&[("DATABASE_URL", "notaurl")]);
        assert!(
            err.contains("DATABASE_URL") && err.contains("not a PostgreSQL URL"),
            "{err}"
        );
        let err = refused(&[("METERD__AMQP__URL", "notaurl")]);
        assert!(
            err.contains("amqp.url") && err.contains("not an AMQP URL"),
            "{err}"
        );
        let err = refused(&[("METERD__LOG__FORMAT", "yaml")]);
        assert!(err.contains("log.format"), "{err}");
    }
}
