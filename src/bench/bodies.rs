//! `meterd bench bodies`: memory under a burst of large ingest bodies. Starts `meterd serve
//! --role api` as a child process (its own heap, so one variant's leftovers never count in
//! another's), measures its idle RSS, sends concurrent 4 MiB `POST /v1/events` bodies, and
//! reports the child's peak RSS and its RSS a few seconds after the burst: with the configured
//! `http.ingest_buffer_bytes` and, as the baseline, with no budget at all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{bench_database, drop_database, median, round};
use crate::config::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct BodiesBenchOptions {
    /// Concurrent clients, each sending one body.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Size of each body in MiB (at most 4, the body limit).
    #[arg(long, default_value_t = 4)]
    pub body_mib: usize,
    /// Bursts per variant; the summary gives the medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds to wait after a burst before reading the RSS again.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
}

/// Runs every round of both variants, handing each round's report to `report`, and returns
/// the summary with the medians of each variant side by side.
pub async fn run(
    settings: &Settings,
    opts: &BodiesBenchOptions,
    mut report: impl FnMut(&serde_json::Value),
) -> anyhow::Result<serde_json::Value> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let url = bench_database(&settings.database.url, &tag).await?;
    crate::db::migrate(&crate::config::DatabaseSettings {
        url: url.clone(),
        max_connections: 2,
    })
    .await?
    .close()
    .await;
    let variants = [
        ("budget", settings.http.ingest_buffer_bytes),
        ("unlimited", usize::MAX >> 3),
    ];
    let result = async {
        let mut runs: Vec<(&str, serde_json::Value)> = Vec::new();
        for round_no in 0..opts.rounds.max(1) {
            for (variant, budget) in variants {
                let mut run = burst(&url, budget, opts, &format!("{tag}-{round_no}")).await?;
                run["variant"] = json!(variant);
                run["round"] = json!(round_no + 1);
                report(&run);
                runs.push((variant, run));
            }
        }
        let summary = |variant: &str, budget: usize| {
            let figures = |key: &str| {
                median(
                    runs.iter()
                        .filter(|(v, _)| *v == variant)
                        .map(|(_, r)| r[key].as_f64().unwrap_or(f64::NAN))
                        .collect(),
                )
            };
            json!({
                "ingest_buffer_bytes": budget,
                "rss_mb_idle": round(figures("rss_mb_idle")),
                "rss_mb_peak": round(figures("rss_mb_peak")),
                "rss_mb_after": round(figures("rss_mb_after")),
                "accepted_bodies": figures("accepted_bodies"),
                "busy_bodies": figures("busy_bodies"),
                "seconds": round(figures("seconds")),
            })
        };
        anyhow::Ok(json!({
            "bench": "bodies-summary",
            "clients": opts.clients,
            "body_mib": opts.body_mib,
            "rounds": opts.rounds.max(1),
            "settle_secs": opts.settle_secs,
            "medians": {
                "budget": summary("budget", variants[0].1),
                "unlimited": summary("unlimited", variants[1].1),
            },
        }))
    }
    .await;
    drop_database(&settings.database.url, &url).await?;
    result
}

/// One burst against a fresh child process with the given budget.
async fn burst(
    database_url: &str,
    budget: usize,
    opts: &BodiesBenchOptions,
    tag: &str,
) -> anyhow::Result<serde_json::Value> {
    let addr = free_port()?;
    let key = format!("bench-{tag}");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--role", "api"])
        .env("METERD__DATABASE__URL", database_url)
        .env("METERD__HTTP__ADDR", addr.to_string())
        .env("METERD__HTTP__INGEST_BUFFER_BYTES", budget.to_string())
        .env("METERD__AUTH__ADMIN_KEY", &key)
        .env("METERD__BILLING__AUTO_FINALIZE", "false")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start meterd serve")?;
    let pid = child.id().context("the child has no pid")?;
    wait_until_up(addr).await?;
    // Let start-up allocations settle before the idle figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mb_of(pid);

    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak = rss_mb_of(pid);
            while !sampling.is_cancelled() {
                peak = peak.max(rss_mb_of(pid));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak.max(rss_mb_of(pid))
        }
    });
    let started = Instant::now();
    let mut clients = Vec::with_capacity(opts.clients);
    for client in 0..opts.clients {
        let body = body(&format!("{tag}-{client}"), opts.body_mib * 1024 * 1024);
        let key = key.clone();
        clients.push(tokio::spawn(async move { post(addr, &key, body).await }));
    }
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    for client in clients {
        let status = match client.await? {
            Ok(code) => code.to_string(),
            Err(_) => "reset".to_owned(),
        };
        *statuses.entry(status).or_default() += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(opts.settle_secs)).await;
    sampling.cancel();
    let peak = sampler.await?;
    let after = rss_mb_of(pid);
    child.start_kill()?;
    child.wait().await?;
    Ok(json!({
        "bench": "bodies",
        "ingest_buffer_bytes": budget,
        "rss_mb_idle": round(idle),
        "rss_mb_peak": round(peak),
        "rss_mb_after": round(after),
        "accepted_bodies": statuses.get("200").copied().unwrap_or(0),
        "busy_bodies": statuses.get("503").copied().unwrap_or(0),
        "statuses": statuses,
        "seconds": round(seconds),
    }))
}

/// A body of valid events of about 1 KiB each (an unknown field pads them), `bytes` long.
fn body(tag: &str, bytes: usize) -> Vec<u8> {
    let timestamp = chrono::Utc::now().to_rfc3339();
    let pad = "x".repeat(900);
    let mut body = b"[".to_vec();
    for n in 0.. {
        let event = json!({
            "id": format!("{tag}-{n}"), "tenant": "bench", "function": format!("fn-{}", n % 50),
            "timestamp": timestamp, "duration_ms": 120, "memory_mb": 512, "note": pad,
        });
        let event = serde_json::to_vec(&event).expect("an event serializes");
        if body.len() + event.len() + 2 > bytes {
            break;
        }
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event);
    }
    body.push(b']');
    body.resize(bytes, b' ');
    body
}

/// Sends one POST and returns the status; the body is written while the answer is awaited,
/// since a refused body is answered before it is read.
async fn post(addr: SocketAddr, key: &str, body: Vec<u8>) -> anyhow::Result<u16> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let send = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await
    });
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer).await;
    send.abort();
    if answer.is_empty() {
        read?;
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad answer {:?}", line.lines().next()))
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn wait_until_up(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut client) = super::api::Client::connect(addr).await
            && let Ok((200, _)) = client.get("/healthz", "").await
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "meterd did not start on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resident set of process `pid` in MiB (Linux), 0 where unknown.
fn rss_mb_of(pid: u32) -> f64 {
    super::vm_rss_mb(&format!("/proc/{pid}/status"))
}
