//! `meterd bench`: measured figures on this machine, printed as one JSON line.
//!
//! `bench ingest` fills two identical backlogs of N events, K per message, in fresh queues;
//! consumes the first with no database work (the broker's ceiling: lapin, the same prefetch,
//! acks with `multiple`) and the second with meterd's consumer into a fresh database, timing
//! until every event is committed. It samples the process's RSS while meterd consumes.

pub mod api;
pub mod bodies;

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
    /// Measurements to take, each on fresh backlogs; with more than one, a summary line
    /// with the medians follows (the raw ceiling of a shared machine drifts between runs).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// Runs [`ingest`] `opts.rounds` times, handing each report to `report`; with more than
/// one round, returns a summary of the ratios and rates with their medians.
pub async fn ingest_rounds(
    settings: &Settings,
    opts: &IngestBenchOptions,
    mut report: impl FnMut(&serde_json::Value),
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut runs = Vec::with_capacity(opts.rounds);
    for _ in 0..opts.rounds.max(1) {
        let run = ingest(settings, opts).await?;
        report(&run);
        runs.push(run);
    }
    if runs.len() < 2 {
        return Ok(None);
    }
    let figures = |key: &str| -> Vec<f64> {
        runs.iter()
            .map(|run| run[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    Ok(Some(json!({
        "bench": "ingest-summary",
        "rounds": runs.len(),
        "per_message": opts.per_message,
        "ratios": figures("ratio"),
        "ratio_median": median(figures("ratio")),
        "raw_events_per_s_median": median(figures("raw_events_per_s")),
        "meterd_events_per_s_median": median(figures("meterd_events_per_s")),
    })))
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
    let counted: (i64,) =
        sqlx::query_as("SELECT coalesce(sum(requests), 0)::int8 FROM usage_hourly")
            .fetch_one(&pool)
            .await?;
    let rate = opts.events as f64 / meterd_secs;
    let latency = visibility_latency(&amqp, &pool, opts, rate / 2.0).await;
    shutdown.cancel();
    let _ = consumer.await;
    let latency = latency?;
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
        "batches": metrics.batch_events.get_sample_count(),
        "batch_events_mean": round(metrics.batch_events.get_sample_sum() / metrics.batch_events.get_sample_count().max(1) as f64),
        "batch_commit_mean_ms": round(1000.0 * metrics.commit_seconds.get_sample_sum() / metrics.commit_seconds.get_sample_count().max(1) as f64),
        "visibility_at_half_rate": latency,
    }))
}

/// With the consumer still running, publishes the same workload at `rate` events/s for a
/// few seconds and, alongside it, single probe events, timing each from its publish until
/// the buckets the usage API reads show it.
async fn visibility_latency(
    amqp: &crate::config::AmqpSettings,
    pool: &sqlx::PgPool,
    opts: &IngestBenchOptions,
    rate: f64,
) -> anyhow::Result<serde_json::Value> {
    const SECONDS: f64 = 8.0;
    let stop = CancellationToken::new();
    let background = LoadgenOptions {
        tenants: 20,
        functions: 50,
        rate,
        per_message: opts.per_message,
        duplicates: 0.0,
        events: Some((rate * SECONDS) as u64),
        seed: 8,
    };
    let load = tokio::spawn({
        let (amqp, stop) = (amqp.clone(), stop.clone());
        async move { crate::loadgen::run(&amqp, background, stop).await }
    });
    let connection = topology::connect(amqp, "meterd-bench-probe").await?;
    let mut probe = ConfirmedPublisher::new(&connection, &amqp.exchange, "usage.probe").await?;
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(SECONDS);
    while Instant::now() < until {
        let n = latencies.len() as i64 + 1;
        let event = json!({"id": format!("probe-{n}"), "tenant": "bench-probe", "function": "probe",
            "timestamp": chrono::Utc::now().to_rfc3339(), "duration_ms": 1, "memory_mb": 128});
        let sent = Instant::now();
        probe.publish(&serde_json::to_vec(&event)?).await?;
        probe.flush().await?;
        loop {
            let (seen,): (i64,) = sqlx::query_as(
                "SELECT coalesce(sum(requests), 0)::int8 FROM usage_hourly WHERE tenant = 'bench-probe'",
            )
            .fetch_one(pool)
            .await?;
            if seen >= n {
                break;
            }
            anyhow::ensure!(
                sent.elapsed() < Duration::from_secs(30),
                "probe {n} never became visible"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = load.await;
    let _ = connection.close(200, "done".into()).await;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Ok(json!({
        "rate_events_per_s": round(rate),
        "probes": latencies.len(),
        "p50_ms": round(pct(0.5)),
        "p99_ms": round(pct(0.99)),
        "max_ms": round(pct(1.0)),
    }))
}

/// The middle value (the mean of the two middle ones for an even count), rounded; NaN for
/// none.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    round(match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (xs[mid - 1] + xs[mid]) / 2.0,
        _ => xs[mid],
    })
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
pub(crate) async fn bench_database(base_url: &str, tag: &str) -> anyhow::Result<String> {
    let (prefix, _) = base_url
        .rsplit_once('/')
        .context("database.url has no database name")?;
    Ok(format!("{prefix}/meterd_bench_{tag}"))
}

pub(crate) async fn drop_database(admin_url: &str, url: &str) -> anyhow::Result<()> {
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
    vm_rss_mb("/proc/self/status")
}

/// `VmRSS` of a `/proc/…/status` file in MiB, 0 where unknown.
fn vm_rss_mb(status_file: &str) -> f64 {
    std::fs::read_to_string(status_file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportBenchOptions {
    /// Hourly usage rows to seed and export.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
}

/// `bench export`: seeds N rows of `usage_hourly` in a fresh database (20 tenants × 50
/// functions × 2 archs per hour), starts the API in this process, and streams
/// `GET /v1/exports/usage.csv` over the whole range with a bare HTTP/1.1 client that counts
/// rows as they arrive, while sampling this process's RSS (server and client both).
pub async fn export(
    settings: &Settings,
    opts: &ExportBenchOptions,
) -> anyhow::Result<serde_json::Value> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut app_settings = settings.clone();
    app_settings.database.url = bench_database(&settings.database.url, &tag).await?;
    app_settings.http.addr = "127.0.0.1:0".to_owned();
    app_settings.auth.admin_key = format!("bench-{tag}");
    app_settings.billing.auto_finalize = false;
    let app = crate::app::start(
        app_settings.clone(),
        crate::app::ServeRole::Api,
        CancellationToken::new(),
    )
    .await?;
    let result = measure_export(&app, &app_settings.auth.admin_key, opts).await;
    app.pool.close().await;
    app.stop().await;
    drop_database(&settings.database.url, &app_settings.database.url).await?;
    result
}

async fn measure_export(
    app: &crate::app::RunningApp,
    key: &str,
    opts: &ExportBenchOptions,
) -> anyhow::Result<serde_json::Value> {
    const SERIES: u64 = 2000;
    let seed_started = Instant::now();
    sqlx::query(
        "INSERT INTO usage_hourly (tenant, hour, function, arch, requests, billed_ms, mb_ms)
         SELECT 'tenant-' || lpad((s % 20)::text, 2, '0'),
                timestamptz '2026-01-01 00:00Z' + (i / 2000) * interval '1 hour',
                'function-' || lpad((s / 20 % 50)::text, 2, '0'),
                CASE WHEN s < 1000 THEN 'x86_64' ELSE 'arm64' END,
                r, r * (100 + s), r * (100 + s) * 128 * (1 + s % 8)
         FROM generate_series(0, $1 - 1) AS i,
              LATERAL (SELECT i % 2000 AS s, 1 + (i * 7919) % 1000 AS r) AS x",
    )
    .bind(i64::try_from(opts.rows)?)
    .execute(&app.pool)
    .await
    .context("seed usage_hourly")?;
    sqlx::query("VACUUM ANALYZE usage_hourly")
        .execute(&app.pool)
        .await?;
    let seed_secs = seed_started.elapsed().as_secs_f64();

    let hours = opts.rows.div_ceil(SERIES) as i64;
    let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.to_utc();
    let to = from + chrono::Duration::hours(hours.max(1));
    let path = format!(
        "/v1/exports/usage.csv?from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );

    let rss_before = rss_mb();
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak = rss_mb();
            while !sampling.is_cancelled() {
                peak = peak.max(rss_mb());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak.max(rss_mb())
        }
    });
    let started = Instant::now();
    let download = http_get_csv(app.addr, &path, key).await;
    let secs = started.elapsed().as_secs_f64();
    sampling.cancel();
    let peak_rss = sampler.await?;
    let download = download?;
    anyhow::ensure!(
        download.rows == opts.rows,
        "exported {} of {} rows",
        download.rows,
        opts.rows
    );
    Ok(json!({
        "bench": "export",
        "export": "usage.csv",
        "rows": download.rows,
        "bytes": download.bytes,
        "seed_seconds": round(seed_secs),
        "first_byte_seconds": round(download.first_byte_secs),
        "seconds": round(secs),
        "rows_per_s": round(download.rows as f64 / secs),
        "mb_per_s": round(download.bytes as f64 / secs / 1_048_576.0),
        "rss_mb_before": round(rss_before),
        "rss_mb_peak": round(peak_rss),
        "rss_growth_mb": round(peak_rss - rss_before),
    }))
}

struct CsvDownload {
    rows: u64,
    bytes: u64,
    first_byte_secs: f64,
}

/// A minimal HTTP/1.1 GET of a chunked CSV body, read to the end and never held whole:
/// counts data rows (line ends after the header; the bench's names hold no line breaks).
async fn http_get_csv(
    addr: std::net::SocketAddr,
    path: &str,
    key: &str,
) -> anyhow::Result<CsvDownload> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let first_byte_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        line.starts_with("HTTP/1.1 200"),
        "the export answered {line:?}"
    );
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    anyhow::ensure!(chunked, "the export is not streamed with chunked encoding");
    let (mut line_ends, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let size_text = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            break;
        }
        chunk.resize(size + 2, 0);
        reader.read_exact(&mut chunk).await?;
        anyhow::ensure!(chunk.ends_with(b"\r\n"), "a chunk does not end with CRLF");
        let data = &chunk[..size];
        bytes += size as u64;
        line_ends += data.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok(CsvDownload {
        rows: line_ends.saturating_sub(1),
        bytes,
        first_byte_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_of_sorted_figures() {
        assert_eq!(median(vec![0.9, 0.5, 0.7]), 0.7);
        assert_eq!(median(vec![0.8, 0.5, 0.7, 1.2]), 0.75);
        assert_eq!(median(vec![3.0]), 3.0);
        assert!(median(vec![]).is_nan());
    }
}
