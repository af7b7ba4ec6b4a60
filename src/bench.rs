//! `meterd bench`: measured figures on this machine, printed as one JSON line.
//!
//! `bench ingest` fills two identical backlogs of N events, K per message, in fresh queues;
//! consumes the first with no database work (the broker's ceiling: lapin, the same prefetch,
//! acks with `multiple`) and the second with meterd's consumer into a fresh database, timing
//! until every event is committed. It samples the process's RSS while meterd consumes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};
use serde_json::json;
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ingest::{run_consumer, topology};
use crate::loadgen::{ConfirmedPublisher, EventGenerator, LoadgenOptions};
use crate::metering::MeterStore;
use crate::metrics::Metrics;

#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchOptions {
    /// Events in each backlog.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Events per message.
    #[arg(long, default_value_t = 1)]
    pub per_message: usize,
}

pub async fn ingest(
    settings: &Settings,
    opts: &IngestBenchOptions,
) -> anyhow::Result<serde_json::Value> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut amqp = settings.amqp.clone();
    amqp.exchange = format!("meterd.bench.{tag}");
    amqp.queue = format!("meterd.bench.{tag}.events");
    amqp.dead_letter_exchange = format!("meterd.bench.{tag}.dlx");
    amqp.dead_letter_queue = format!("meterd.bench.{tag}.dead");
    amqp.connection_name = format!("meterd-bench-{tag}");
    amqp.queue_expires_ms = Some(10 * 60 * 1000);
    let raw_queue = format!("meterd.bench.{tag}.raw");

    let connection = topology::connect(&amqp, "meterd-bench-publisher").await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, &amqp).await?;
    let mut raw_settings = amqp.clone();
    raw_settings.queue = raw_queue.clone();
    topology::declare(&channel, &raw_settings).await?;
    channel
        .queue_unbind(
            raw_queue.as_str().into(),
            amqp.exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await?;

    // The same workload twice: the raw queue takes it by its name on the default exchange.
    let workload = LoadgenOptions {
        tenants: 20,
        functions: 50,
        rate: 0.0,
        per_message: opts.per_message,
        duplicates: 0.0,
        events: Some(opts.events),
        seed: 7,
    };
    let fill_started = Instant::now();
    let messages = fill(&connection, "", &raw_queue, &workload, opts).await?;
    fill(&connection, &amqp.exchange, "usage.bench", &workload, opts).await?;
    let fill_secs = fill_started.elapsed().as_secs_f64();

    let raw_secs = consume_raw(&amqp, &raw_queue, messages).await?;

    let database_url = bench_database(&settings.database.url, &tag).await?;
    let mut db = settings.database.clone();
    db.url = database_url.clone();
    let pool = crate::db::migrate(&db).await?;
    let store = Arc::new(MeterStore::new(
        pool.clone(),
        settings.metering.clone(),
        settings.billing.default_plan.clone(),
    ));
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let rss_before = rss_mb();
    let started = Instant::now();
    let consumer = tokio::spawn(run_consumer(
        amqp.clone(),
        store,
        metrics.clone(),
        shutdown.clone(),
    ));
    let mut peak_rss = rss_before;
    let deadline = Instant::now() + Duration::from_secs(600);
    while metrics.events_accepted.get() < opts.events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "meterd did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak_rss = peak_rss.max(rss_mb());
    }
    let meterd_secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = consumer.await;

    let counted: (i64,) =
        sqlx::query_as("SELECT coalesce(sum(requests), 0)::int8 FROM usage_hourly")
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    drop_database(&settings.database.url, &database_url).await?;
    for queue in [&raw_queue, &amqp.queue, &amqp.dead_letter_queue] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [&amqp.exchange, &amqp.dead_letter_exchange] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    anyhow::ensure!(
        counted.0 as u64 == opts.events,
        "counted {} of {} events",
        counted.0,
        opts.events
    );

    let raw_rate = opts.events as f64 / raw_secs;
    let meterd_rate = opts.events as f64 / meterd_secs;
    Ok(json!({
        "bench": "ingest",
        "events": opts.events,
        "per_message": opts.per_message,
        "fill_seconds": round(fill_secs),
        "raw_events_per_s": round(raw_rate),
        "meterd_events_per_s": round(meterd_rate),
        "ratio": round(meterd_rate / raw_rate),
        "rss_mb_before": round(rss_before),
        "rss_mb_peak": round(peak_rss),
        "batch_commit_p50_ms": null,
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn fill(
    connection: &lapin::Connection,
    exchange: &str,
    routing_key: &str,
    workload: &LoadgenOptions,
    opts: &IngestBenchOptions,
) -> anyhow::Result<u64> {
    let mut generator = EventGenerator::new(workload.clone());
    let mut publisher = ConfirmedPublisher::new(connection, exchange, routing_key).await?;
    let mut sent = 0;
    let mut messages = 0;
    while sent < opts.events {
        let n = opts.per_message.min((opts.events - sent) as usize);
        publisher.publish(&generator.message(n)).await?;
        sent += n as u64;
        messages += 1;
    }
    publisher.flush().await?;
    Ok(messages)
}

/// Consumes `messages` from the queue doing no work but acking: the broker's ceiling.
async fn consume_raw(
    amqp: &crate::config::AmqpSettings,
    queue: &str,
    messages: u64,
) -> anyhow::Result<f64> {
    let connection = topology::connect(amqp, "meterd-bench-raw").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(amqp.prefetch, BasicQosOptions::default())
        .await?;
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let ack_every = (u64::from(amqp.prefetch) / 2).max(1);
    let mut received = 0;
    while received < messages {
        let delivery = consumer.next().await.context("raw consumer ended")??;
        received += 1;
        if received % ack_every == 0 || received == messages {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok(secs)
}

/// A fresh database beside the configured one.
async fn bench_database(base_url: &str, tag: &str) -> anyhow::Result<String> {
    let (prefix, _) = base_url
        .rsplit_once('/')
        .context("database.url has no database name")?;
    Ok(format!("{prefix}/meterd_bench_{tag}"))
}

async fn drop_database(admin_url: &str, url: &str) -> anyhow::Result<()> {
    let name = url.rsplit_once('/').map(|(_, n)| n).unwrap_or_default();
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .context("database.url has no database name")?;
    let mut conn = sqlx::PgConnection::connect_with(&crate::db::connect_options(&format!(
        "{prefix}/postgres"
    ))?)
    .await?;
    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    conn.execute(sqlx::AssertSqlSafe(drop)).await?;
    Ok(())
}

/// This process's resident set in MiB (Linux), 0 where unknown.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
