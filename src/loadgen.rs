//! Synthetic invocation records, published to the usage exchange: for `meterd loadgen`,
//! `serve --demo` and the benchmark's backlog.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use lapin::{Channel, options::ConfirmSelectOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
use crate::ingest::topology;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenOptions {
    /// Number of distinct tenants.
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Number of distinct functions per tenant.
    #[arg(long, default_value_t = 20)]
    pub functions: usize,
    /// Events per second (0 = as fast as the broker takes them).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Events per message (1 publishes single objects, more publishes arrays).
    #[arg(long, default_value_t = 10)]
    pub per_message: usize,
    /// Share of events that re-send an earlier event's id (0.0–1.0).
    #[arg(long, default_value_t = 0.01)]
    pub duplicates: f64,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub events: Option<u64>,
    /// Random seed, for repeatable workloads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for LoadgenOptions {
    fn default() -> Self {
        LoadgenOptions {
            tenants: 5,
            functions: 20,
            rate: 200.0,
            per_message: 10,
            duplicates: 0.01,
            events: None,
            seed: 1,
        }
    }
}

/// Makes the events: ids unique per run, a share of them re-sent as duplicates.
pub struct EventGenerator {
    rng: StdRng,
    options: LoadgenOptions,
    run: String,
    next_id: u64,
    recent: Vec<Value>,
}

impl EventGenerator {
    pub fn new(options: LoadgenOptions) -> Self {
        EventGenerator {
            rng: StdRng::seed_from_u64(options.seed),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            options,
            next_id: 0,
            recent: Vec::new(),
        }
    }

    pub fn event(&mut self) -> Value {
        if !self.recent.is_empty()
            && self
                .rng
                .random_bool(self.options.duplicates.clamp(0.0, 1.0))
        {
            let i = self.rng.random_range(0..self.recent.len());
            return self.recent[i].clone();
        }
        self.next_id += 1;
        let tenant = self.rng.random_range(0..self.options.tenants.max(1));
        let function = self.rng.random_range(0..self.options.functions.max(1));
        let memory = [128, 256, 512, 1024, 1536, 2048][self.rng.random_range(0..6)];
        let duration_tenths: u32 = self.rng.random_range(1..30_000);
        let mut event = json!({
            "id": format!("{}-{}", self.run, self.next_id),
            "tenant": format!("tenant-{tenant}"),
            "function": format!("fn-{function}"),
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "duration_ms": serde_json::Number::from_f64(f64::from(duration_tenths) / 10.0),
            "memory_mb": memory,
            "arch": if self.rng.random_bool(0.3) { "arm64" } else { "x86_64" },
        });
        if self.rng.random_bool(0.05) {
            event["init_duration_ms"] = json!(self.rng.random_range(50..900));
        }
        if self.recent.len() < 1024 {
            self.recent.push(event.clone());
        } else {
            let i = self.rng.random_range(0..self.recent.len());
            self.recent[i] = event.clone();
        }
        event
    }

    /// One message body of `per_message` events (a single object when 1).
    pub fn message(&mut self, per_message: usize) -> Vec<u8> {
        let body = if per_message <= 1 {
            self.event()
        } else {
            Value::Array((0..per_message).map(|_| self.event()).collect())
        };
        serde_json::to_vec(&body).expect("JSON values serialize")
    }
}

/// Publishes with confirms, waiting for the broker every `window` messages so that a
/// burst cannot run away from what the broker has taken.
pub struct ConfirmedPublisher {
    channel: Channel,
    exchange: String,
    routing_key: String,
    pending: Vec<lapin::PublisherConfirm>,
    window: usize,
}

impl ConfirmedPublisher {
    pub async fn new(
        connection: &lapin::Connection,
        exchange: &str,
        routing_key: &str,
    ) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ConfirmedPublisher {
            channel,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            pending: Vec::new(),
            window: 500,
        })
    }

    pub async fn publish(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                Default::default(),
                body,
                topology::usage_message_properties(),
            )
            .await?;
        self.pending.push(confirm);
        if self.pending.len() >= self.window {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for confirm in self.pending.drain(..) {
            anyhow::ensure!(!confirm.await?.is_nack(), "the broker refused a message");
        }
        Ok(())
    }
}

/// Runs the generator against the usage exchange until `events` are sent or shutdown.
pub async fn run(
    settings: &AmqpSettings,
    options: LoadgenOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    let connection = topology::connect(settings, "meterd-loadgen")
        .await
        .context("connect to the broker")?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, settings).await?;
    let mut publisher =
        ConfirmedPublisher::new(&connection, &settings.exchange, "usage.loadgen").await?;
    let per_message = options.per_message.max(1);
    let limit = options.events.unwrap_or(u64::MAX);
    let rate = options.rate;
    let mut generator = EventGenerator::new(options);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last_report = Instant::now();
    while sent < limit && !shutdown.is_cancelled() {
        let n = per_message.min((limit - sent) as usize);
        publisher.publish(&generator.message(n)).await?;
        sent += n as u64;
        if rate > 0.0 {
            // Pace against the clock so the average rate holds whatever each publish costs.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                publisher.flush().await?;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            tracing::info!(sent, "loadgen published");
            last_report = Instant::now();
        }
    }
    publisher.flush().await?;
    let _ = connection.close(200, "done".into()).await;
    tracing::info!(sent, "loadgen finished");
    Ok(sent)
}
