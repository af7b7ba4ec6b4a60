//! `meterd bench api`: the upcoming-invoice endpoint under concurrent load, for a tenant
//! with many functions and a full month of hourly buckets in both archs.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::app::{self, ServeRole};
use crate::billing::period::{next_period, period_start, period_start_instant};
use crate::config::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiBenchOptions {
    /// Functions of the benchmark tenant.
    #[arg(long, default_value_t = 1000)]
    pub functions: u32,
    /// Concurrent clients, each with one keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

pub async fn run(settings: &Settings, opts: &ApiBenchOptions) -> anyhow::Result<serde_json::Value> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = settings.clone();
    let base = settings.database.url.clone();
    settings.database.url = super::bench_database(&base, &tag).await?;
    settings.http.addr = "127.0.0.1:0".to_owned();
    settings.billing.auto_finalize = false;
    settings.auth.admin_key = format!("bench-{tag}");
    let result = measure(&settings, opts).await;
    super::drop_database(&base, &settings.database.url).await?;
    result
}

async fn measure(settings: &Settings, opts: &ApiBenchOptions) -> anyhow::Result<serde_json::Value> {
    let shutdown = CancellationToken::new();
    let running = app::start(settings.clone(), ServeRole::Api, shutdown.clone()).await?;
    let seeded = Instant::now();
    let rows = seed(&running.pool, opts.functions).await?;
    let seed_secs = seeded.elapsed().as_secs_f64();
    let path = "/v1/tenants/bench/invoices/upcoming";
    let key = settings.auth.admin_key.clone();

    // One warm-up request, which also checks the answer is an invoice.
    let mut probe = Client::connect(running.addr).await?;
    let (status, body) = probe.get(path, &key).await?;
    anyhow::ensure!(
        status == 200,
        "upcoming answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let doc: serde_json::Value = serde_json::from_slice(&body)?;
    let functions = doc["functions"].as_array().map_or(0, Vec::len);

    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut clients = Vec::new();
    for _ in 0..opts.clients {
        let (addr, key) = (running.addr, key.clone());
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await?;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let (status, _) = client.get(path, &key).await?;
                anyhow::ensure!(status == 200, "upcoming answered {status}");
                latencies.push(started.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await??);
    }
    running.stop().await;
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "bench": "api",
        "endpoint": "GET /v1/tenants/{tenant}/invoices/upcoming",
        "functions": opts.functions,
        "hourly_rows": rows,
        "invoice_functions": functions,
        "invoice_bytes": body.len(),
        "clients": opts.clients,
        "seconds": opts.seconds,
        "requests": latencies.len(),
        "requests_per_s": round(latencies.len() as f64 / opts.seconds as f64),
        "p50_ms": round(pct(0.50)),
        "p99_ms": round(pct(0.99)),
        "max_ms": round(pct(1.0)),
        "seed_seconds": round(seed_secs),
    }))
}

/// A tenant with `functions` functions, every hour of the current month so far plus the
/// rest of the month, in both archs, on the default plan.
async fn seed(pool: &sqlx::PgPool, functions: u32) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO tenants (id) VALUES ('bench')")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO tenant_plans (tenant, effective_from, plan_id)
         VALUES ('bench', date_trunc('month', now() AT TIME ZONE 'UTC')::date, 'default')",
    )
    .execute(&mut *tx)
    .await?;
    let (rows,): (i64,) = sqlx::query_as(
        "WITH ins AS (
             INSERT INTO usage_hourly (tenant, hour, function, arch, requests, billed_ms, mb_ms)
             SELECT 'bench', h, 'fn-' || f, a, 1000 + f, 150000 + f, (150000 + f) * 1024::numeric
             FROM generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                                  (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month - 1 hour') AT TIME ZONE 'UTC',
                                  interval '1 hour') AS h,
                  generate_series(1, $1) AS f,
                  unnest(ARRAY['x86_64', 'arm64']) AS a
             RETURNING 1)
         SELECT count(*) FROM ins",
    )
    .bind(functions as i32)
    .fetch_one(&mut *tx)
    .await?;
    // As if two writers had recorded it.
    sqlx::query("INSERT INTO usage_versions VALUES ('bench', 0, 1), ('bench', 1, 1)")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Steady state: every hour but the last one or two is rolled up; rolling up all of them
    // leaves the draft the same rows to read.
    let next = next_period(period_start(chrono::Utc::now()));
    crate::metering::rollup::roll_up(pool, period_start_instant(next)).await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(rows)
}

/// A minimal HTTP/1.1 client: GET on one keep-alive connection, bodies by Content-Length.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    pub async fn get(&mut self, path: &str, key: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let mut body = vec![0; length.context("response without Content-Length")?];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}
